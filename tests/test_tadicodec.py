"""TaDiCodec (tiny): lengths, ragged batches, text-conditioned reproducible flow decoding, prompts, sampler
wiring, layouts, text tokenizer lookup, converter and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import registry
from registry import create_tokenizer
from registry.errors import CheckpointError, ConfigError, InputError
from zoo.layers import flow
from zoo.tadicodec import TaDiCodecTokenizer, config_from_upstream, timestep_features
from zoo.tokens import Tokens

HOP, FACTOR, BITS, MELS, VOCAB = 480, 8, 6, 16, 100  # tadicodec-tiny
PER_ID = HOP * FACTOR


@pytest.fixture(scope="module")
def tok() -> TaDiCodecTokenizer:
    torch.manual_seed(0)
    t = create_tokenizer("tadicodec-tiny").eval()
    # Random init leaves the adaptive norms' scales at exactly 1 and every frame's latent pointing one way;
    # perturb so that time, codes and text all visibly change the velocity and the ids vary over time.
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        # Every frame's encoder output shares one dominant direction: centre the BSQ hyperplanes on the
        # frames of a reference clip (as the parity fixture does) so that each bit splits them.
        features = t.downsample(t.encoder_features(t.mel(speech(1, 48_000, seed=99))))[0]
        w = t.vq_in_linear.weight
        t.vq_in_linear.bias.copy_(-(features.mean(0) @ w.T) + 0.02 * torch.randn(BITS))
    return t


def speech(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 24000.0
    f0 = 110 + 60 * torch.rand(batch, 1, 1, generator=g)
    tone = torch.sin(2 * math.pi * f0 * t) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return (0.3 * tone + 0.05 * torch.randn(batch, 1, samples, generator=g)).float()


TEXT = [[5, 17, 42, 3]]


def test_spec_says_decoding_needs_text_and_is_stochastic(tok) -> None:
    spec = tok.spec
    assert spec.kind == "binary" and spec.codebook_sizes == (2**BITS,) and spec.bits_per_token == BITS
    assert spec.token_rate == 24000 / PER_ID == 6.25 and spec.downsample == (PER_ID,)
    assert spec.bitrate == 6.25 * BITS and spec.decode_needs == ("text",) and spec.stochastic_decode
    assert spec.sample_rate == 24000 and spec.channels == 1


def test_published_variant_spec_without_weights() -> None:
    import zoo

    info = zoo.info("tadicodec-24khz")
    spec = info["spec"]
    assert spec.codebook_sizes == (16384,) and spec.bitrate == 87.5 and spec.token_rate == 6.25
    # every float tensor of upstream's two state dicts (fixture manifest: 495,766,685 + 255,044,354 elements)
    # except the stored iSTFT window (1920, a buffer here) and BSQ's place values (14 + 1, rebuilt here)
    assert info["parameters"] == 495_766_685 + 255_044_354 - 1920 - 15


def test_lengths_follow_upstream_and_pad_keeps_every_sample(tok) -> None:
    for samples in (PER_ID, 2 * PER_ID - 1, 12_345, 48_000):
        tokens = tok.encode(speech(1, samples))
        frames = 1 + (samples + 1440 - 1920) // HOP
        assert tokens.ids.shape == (1, frames // FACTOR) == (1, tok.num_tokens(samples))
        assert tokens.lengths.tolist() == [frames // FACTOR] and tokens.original_size.tolist() == [samples]
    padded = tok.encode(speech(1, 12_345), pad=True)
    assert padded.ids.shape == (1, math.ceil(12_345 / PER_ID)) and padded.meta["padded"]
    out = tok.decode(padded, text_ids=TEXT, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 12_345)
    out = tok.decode(tok.encode(speech(1, 12_345)), text_ids=TEXT, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, (12_345 // HOP // FACTOR) * PER_ID)


def test_ids_vary_and_match_the_tensor_path(tok) -> None:
    x = speech(1, 24_000 * 3)
    tokens = tok.encode(x)
    with torch.no_grad():
        assert torch.equal(tokens.ids, tok.encode_ids(x))
    assert len(set(tokens.ids[0].tolist())) > 3


def test_ragged_batch_gives_each_clip_its_solo_ids(tok) -> None:
    x = speech(3, 30_000, seed=1)
    lengths = [30_000, 17_000, 9_000]
    for b, n in enumerate(lengths):
        x[b, :, n:] = 0.0
    tokens = tok.encode(x, lengths=lengths)
    assert tokens.lengths.tolist() == [n // HOP // FACTOR for n in lengths]
    for b, n in enumerate(lengths):
        alone = tok.encode(x[b : b + 1, :, :n]).ids[0]
        assert torch.equal(tokens.ids[b, : len(alone)], alone)
        assert bool((tokens.ids[b, len(alone) :] == 0).all())


def test_a_batch_decodes_like_its_items_alone(tok) -> None:
    x = speech(2, 30_000, seed=2)
    tokens = tok.encode(x, lengths=[30_000, 20_000])
    texts = [[1, 2, 3], [9, 8]]
    width = FACTOR * int(tokens.lengths.max())
    noise = torch.randn(2, width, MELS, generator=torch.Generator().manual_seed(3))
    both = tok.decode(tokens, text_ids=texts, noise=noise)
    for b in range(2):
        item = tokens.item(b)
        n = FACTOR * int(tokens.lengths[b])
        alone = tok.decode(item, text_ids=[texts[b]], noise=noise[b : b + 1, :n])
        assert torch.allclose(both[b : b + 1, :, : alone.shape[-1]], alone, atol=1e-5)
        assert bool((both[b, :, alone.shape[-1] :] == 0).all())


def test_decode_is_reproducible_and_depends_on_noise_text_and_ids(tok) -> None:
    tokens = tok.encode(speech(1, 20_000, seed=4))
    width = FACTOR * tokens.ids.shape[1]
    a = tok.decode(tokens, text_ids=TEXT, generator=torch.Generator().manual_seed(5))
    b = tok.decode(tokens, text_ids=TEXT, generator=torch.Generator().manual_seed(5))
    c = tok.decode(tokens, text_ids=TEXT, noise=flow.draw_noise((1, width, MELS), torch.Generator().manual_seed(5)))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.allclose(a, tok.decode(tokens, text_ids=TEXT, generator=torch.Generator().manual_seed(6)))
    same_noise = flow.draw_noise((1, width, MELS), torch.Generator().manual_seed(5))
    assert not torch.allclose(a, tok.decode(tokens, text_ids=[[7, 7, 1]], noise=same_noise))
    other = tokens.replace(ids=(tokens.ids + 1) % 2**BITS)
    assert not torch.allclose(a, tok.decode(other, text_ids=TEXT, generator=torch.Generator().manual_seed(5)))


def test_one_step_is_noise_plus_the_rescaled_guided_midpoint_velocity(tok) -> None:
    ids = tok.encode(speech(1, 16_000, seed=7)).ids
    noise = torch.randn(1, FACTOR * ids.shape[1], MELS, generator=torch.Generator().manual_seed(8))
    text = torch.tensor(TEXT)
    mel, frames = tok.decode_mel(ids, text_ids=text, noise=noise, steps=1, cfg_scale=2.0, rescale=0.75)
    with torch.no_grad():
        cond = tok.condition(ids)
        t = torch.full((1,), 0.5)
        c = tok.velocity(noise, t, cond, text)
        u = tok.velocity_uncond(noise, t)
    g = u + 2.0 * (c - u)
    v = 0.75 * g * (c.std() / g.std()) + 0.25 * g  # upstream's rescaling, unbiased std over the tensor
    assert frames == [noise.shape[1]] and torch.allclose(mel, noise + v, atol=1e-6)


def test_guidance_off_skips_the_unconditional_pass(tok) -> None:
    ids = tok.encode(speech(1, 16_000, seed=9)).ids
    calls = {"cond": 0, "uncond": 0}

    def cond_fn(x, t, c, txt):
        calls["cond"] += 1
        return tok.velocity(x, t, c, txt)

    def uncond_fn(x, t):
        calls["uncond"] += 1
        return tok.velocity_uncond(x, t)

    tok.decode(ids, text_ids=TEXT, steps=3, cfg_scale=0.0, velocity_fn=cond_fn, uncond_velocity_fn=uncond_fn,
               generator=torch.Generator().manual_seed(0))
    assert calls == {"cond": 3, "uncond": 0}
    tok.decode(ids, text_ids=TEXT, steps=3, cfg_scale=2.0, velocity_fn=cond_fn, uncond_velocity_fn=uncond_fn,
               generator=torch.Generator().manual_seed(0))
    assert calls == {"cond": 6, "uncond": 3}


def test_sampler_options_and_a_diffusers_scheduler(tok) -> None:
    ids = tok.encode(speech(1, 16_000, seed=10)).ids
    kw = {"text_ids": TEXT, "generator": torch.Generator().manual_seed(1)}
    base = tok.decode_mel(ids, steps=4, **kw)[0]
    kw["generator"] = torch.Generator().manual_seed(1)
    heun = tok.decode_mel(ids, steps=4, solver="heun", **kw)[0]
    assert not torch.allclose(base, heun)
    pytest.importorskip("diffusers", reason="the scheduler option samples through a diffusers scheduler")
    kw["generator"] = torch.Generator().manual_seed(1)
    sched = tok.decode_mel(ids, steps=4, scheduler="FlowMatchEulerDiscreteScheduler", **kw)[0]
    assert sched.shape == base.shape and bool(torch.isfinite(sched).all())


def test_prompt_leads_the_sequence_and_only_the_target_comes_back(tok) -> None:
    prompt, target = speech(1, 9_600, seed=11), speech(1, 20_000, seed=12)
    tokens = tok.encode(target, prompt=prompt)
    p = 9_600 // HOP
    assert tokens.extras["prompt_frames"].tolist() == [p]
    assert tokens.ids.shape[1] == (p + 20_000 // HOP) // FACTOR
    frames = FACTOR * tokens.ids.shape[1] - p
    noise = torch.randn(1, frames, MELS, generator=torch.Generator().manual_seed(13))
    out = tok.decode(tokens, text_ids=TEXT, prompt=prompt, noise=noise)
    assert out.shape == (1, 1, frames * HOP)
    with torch.no_grad():
        same = tok.decode(tokens, text_ids=TEXT, prompt_mel=tok.mel(prompt), noise=noise)
    assert torch.equal(out, same)
    with pytest.raises(InputError, match="same prompt"):
        tok.decode(tokens, text_ids=TEXT)
    with pytest.raises(InputError, match="encoded after"):
        tok.decode(tokens, text_ids=TEXT, prompt=speech(1, 4_800))


def test_self_prompt_with_bare_ids_returns_the_frames_after_it(tok) -> None:
    x = speech(1, 30_000, seed=14)
    ids = tok.encode(x).ids
    with torch.no_grad():
        head = tok.mel(x)[:, :20]
    out = tok.decode_mel(ids, text_ids=TEXT, prompt_mel=head, generator=torch.Generator().manual_seed(0))
    assert out[1] == [FACTOR * ids.shape[1] - 20]


def test_flow_recipe_runs_the_decode_around_the_parts(tok) -> None:
    ids = tok.encode(speech(1, 16_000, seed=15)).ids
    text = torch.tensor(TEXT)
    noise = torch.randn(1, FACTOR * ids.shape[1], MELS, generator=torch.Generator().manual_seed(16))
    recipe = tok.flow_recipe()
    assert recipe["solver"] == "midpoint" and recipe["steps"] == tok.config.sampling_steps
    with torch.no_grad():
        cond, x, times = tok.condition(ids), noise.clone(), recipe["times"]
        for t0, t1 in zip(times, times[1:], strict=False):
            t = torch.full((1,), t0 + (t1 - t0) / 2)
            c, u = tok.velocity(x, t, cond, text), tok.velocity_uncond(x, t)
            g = u + recipe["cfg_scale"] * (c - u)
            r = recipe["rescale"]
            x = x + (t1 - t0) * (r * g * (c.std() / g.std()) + (1 - r) * g)
        ours = tok.decode(ids, text_ids=text, noise=noise)
        assert torch.allclose(tok.vocode(x), ours, atol=1e-5)
        assert torch.allclose(tok.decode_ids(ids, text, noise), ours, atol=1e-5)


def test_timestep_features_are_sin_then_cos_of_t() -> None:
    t = torch.tensor([0.25, 0.75])
    feats = timestep_features(t, 8)
    freqs = np.exp(-np.arange(4) * math.log(10000.0) / 3)
    ref = np.concatenate([np.sin(t.numpy()[:, None] * freqs), np.cos(t.numpy()[:, None] * freqs)], -1)
    assert np.allclose(feats.numpy(), ref, atol=1e-6)


def test_layouts_embed_and_noise(tok) -> None:
    tokens = tok.encode(speech(2, 20_000, seed=17))
    up = tok.tokens_to_upstream(tokens)
    assert torch.equal(up, tokens.ids)
    back = tok.tokens_from_upstream(up.numpy())
    assert torch.equal(back.ids, tokens.ids) and back.lengths is None
    codes = tok.embed(torch.tensor([[2 ** (BITS - 1), 1]]))
    scale = 1 / math.sqrt(BITS)
    assert torch.allclose(codes[0, 0], torch.tensor([scale] + [-scale] * (BITS - 1)))  # msb first
    assert torch.allclose(codes[0, 1], torch.tensor([-scale] * (BITS - 1) + [scale]))
    noise = np.random.RandomState(0).standard_normal((5, MELS)).astype(np.float32)
    assert tuple(tok.noise_from_upstream(noise).shape) == (1, 5, MELS)


def test_tokens_save_and_load_keep_lengths_and_prompt(tok, tmp_path) -> None:
    tokens = tok.encode(speech(1, 20_000, seed=18), prompt=speech(1, 4_800, seed=19))
    back = Tokens.load(tokens.save(tmp_path / "t.safetensors"))
    assert torch.equal(back.ids, tokens.ids)
    assert torch.equal(back.extras["prompt_frames"], tokens.extras["prompt_frames"])
    assert torch.equal(back.original_size, tokens.original_size) and torch.equal(back.lengths, tokens.lengths)


def test_training_forward_gives_finite_losses_with_gradients(tok) -> None:
    torch.manual_seed(0)
    tok.train()
    try:
        out = tok(speech(2, 16_000, seed=20))
    finally:
        tok.eval()
    assert set(out["losses"]) >= {"flow_l1", "entropy"} and bool(torch.isfinite(out["loss"]))
    out["loss"].backward()
    assert tok.decoder.in_linear.weight.grad is not None and tok.vq_in_linear.weight.grad is not None
    tok.zero_grad(set_to_none=True)


def test_save_and_load_pretrained_round_trip(tok, tmp_path) -> None:
    tok.save_pretrained(tmp_path / "ckpt")
    back = registry.from_pretrained(str(tmp_path / "ckpt"))
    x = speech(1, 16_000, seed=21)
    assert torch.equal(back.encode(x).ids, tok.encode(x).ids)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(back.decode(tok.encode(x), text_ids=TEXT, generator=g),
                          tok.decode(tok.encode(x), text_ids=TEXT, generator=torch.Generator().manual_seed(0)))


# -- text tokenizer ---------------------------------------------------------------------------------


def test_text_without_tokenizer_files_says_what_to_do(tok, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    ids = tok.encode(speech(1, 8_000)).ids
    with pytest.raises(CheckpointError, match="text_ids="):
        tok.decode(ids, text="hello")
    published = create_tokenizer("tadicodec-tiny", text_tokenizer="amphion/TaDiCodec")
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        published.tokenize_text("hello")
    with pytest.raises(CheckpointError, match=str(tmp_path / "nowhere")):
        tok.tokenize_text("hello", text_tokenizer=tmp_path / "nowhere")


def test_text_uses_a_local_tokenizer_folder(tok, tmp_path) -> None:
    tokenizers = pytest.importorskip("tokenizers", reason="reading tokenizer.json needs the tokenizers package")
    vocab = {"[UNK]": 0, "hello": 7, "world": 9}
    model = tokenizers.models.WordLevel(vocab, unk_token="[UNK]")
    fast = tokenizers.Tokenizer(model)
    fast.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    folder = tmp_path / "text_tokenizer"
    folder.mkdir()
    fast.save(str(folder / "tokenizer.json"))
    assert tok.tokenize_text(["hello world", "world"], text_tokenizer=tmp_path) == [[7, 9], [9]]
    ids = tok.encode(speech(1, 8_000)).ids
    g = torch.Generator().manual_seed(0)
    a = tok.decode(ids, text="hello world", text_tokenizer=folder, generator=g)
    assert torch.equal(a, tok.decode(ids, text_ids=[[7, 9]], generator=torch.Generator().manual_seed(0)))


# -- converter --------------------------------------------------------------------------------------


def upstream_state(tok: TaDiCodecTokenizer) -> dict[str, torch.Tensor]:
    """Our weights as upstream's two files hold them (our names are upstream's) plus BSQ's place values."""
    state = {k: v.clone() for k, v in tok.state_dict().items()}
    state["bsq.basis"] = 2 ** torch.arange(BITS - 1, -1, -1)
    state["bsq.group_basis"] = torch.ones(1, dtype=torch.long)
    return state


def test_converter_reproduces_the_model_and_drops_unused_keys(tok) -> None:
    state = upstream_state(tok)
    state["repa_mlp.0.weight"] = torch.zeros(2, 2)
    new = registry.convert("tadicodec", state, None, **_tiny_overrides())
    x = speech(1, 16_000, seed=22)
    assert torch.equal(new.encode(x).ids, tok.encode(x).ids)
    assert not any(b.is_meta for b in new.buffers())
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(new.decode(tok.encode(x), text_ids=TEXT, generator=g),
                          tok.decode(tok.encode(x), text_ids=TEXT, generator=torch.Generator().manual_seed(0)))


def _tiny_overrides() -> dict:
    cfg = registry.config.load_variant_config("tadicodec-tiny").model
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg)
    out = {k: v for k, v in plain.items() if k != "vocoder"}
    out.update({f"vocoder.{k}": v for k, v in plain["vocoder"].items()})
    return out


def test_converter_refuses_unknown_missing_and_misordered_weights(tok) -> None:
    state = upstream_state(tok)
    state["decoder.mystery.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="decoder.mystery.weight"):
        registry.convert("tadicodec", state, None, **_tiny_overrides())
    state = upstream_state(tok)
    state.pop("decoder.out_linear.bias")
    with pytest.raises(CheckpointError, match="decoder.out_linear.bias"):
        registry.convert("tadicodec", state, None, **_tiny_overrides())
    state = upstream_state(tok)
    state["bsq.basis"] = 2 ** torch.arange(BITS)
    with pytest.raises(CheckpointError, match="msb-first"):
        registry.convert("tadicodec", state, None, **_tiny_overrides())
    state = {k: v for k, v in upstream_state(tok).items() if not k.startswith("vocoder.")}
    with pytest.raises(CheckpointError, match="vocoder"):
        registry.convert("tadicodec", state, None, **_tiny_overrides())
    state = upstream_state(tok)
    state["decoder.extra.weight"] = torch.zeros(1)
    new = registry.convert("tadicodec", state, None, drop_prefixes=("decoder.extra.",), **_tiny_overrides())
    assert isinstance(new, TaDiCodecTokenizer)


def test_upstream_config_mapping_and_refusals() -> None:
    up = json.loads(json.dumps({
        "preprocess": {"hop_size": 480, "sample_rate": 24000, "n_fft": 1920, "num_mels": 128, "win_size": 1920,
                       "fmin": 0, "fmax": 12000, "mel_var": 8.14, "mel_mean": -4.92},
        "model": {"tadicodec": {"mel_dim": 128, "in_dim": 128, "hidden_size": 1024, "encoder_num_layers": 8,
                                "decoder_num_layers": 16, "num_heads": 16, "down_sample_factor": 8, "vq_emb_dim": 14,
                                "use_text_cond": True, "text_vocab_size": 32100, "vq_type": "bsq"},
                  "vocos": {"input_channels": 128, "dim": 1024, "intermediate_dim": 4096, "num_layers": 30,
                            "n_fft": 1920, "hop_size": 480, "padding": "same"}},
        "inference": {"n_timesteps": 32, "cfg_scale": 2.0, "rescale_cfg": 0.75},
    }))
    out = config_from_upstream(up)
    assert out["bits"] == 14 and out["hidden_size"] == 1024 and out["intermediate_size"] == 4096
    assert out["vocoder"] == {"input_channels": 128, "dim": 1024, "intermediate_dim": 4096, "num_layers": 30}
    assert out["sampling_steps"] == 32 and out["n_mels"] == 128 and out["mel_var"] == 8.14
    bad = json.loads(json.dumps(up))
    bad["model"]["tadicodec"]["vq_type"] = "simple"
    with pytest.raises(ConfigError, match="vq_type"):
        config_from_upstream(bad)
    bad = json.loads(json.dumps(up))
    bad["model"]["tadicodec"]["mel_dim"] = 100
    with pytest.raises(ConfigError, match="mel_dim"):
        config_from_upstream(bad)


# -- bad input --------------------------------------------------------------------------------------


def test_bad_audio_is_refused_with_the_fix(tok) -> None:
    with pytest.raises(InputError, match="downmix"):
        tok.encode(torch.zeros(1, 2, 8_000))
    with pytest.raises(InputError, match="too short"):
        tok.encode(torch.zeros(1, 1, PER_ID - 1))
    with pytest.raises(InputError, match="NaN"):
        tok.encode(torch.full((1, 1, 8_000), float("nan")))
    with pytest.raises(InputError, match="lengths"):
        tok.encode(torch.zeros(2, 1, 8_000), lengths=[8_000, 9_000])
    with pytest.raises(InputError, match="unknown encode option"):
        tok.encode(torch.zeros(1, 1, 8_000), steps=3)


def test_bad_tokens_text_prompt_and_noise_are_refused_with_the_fix(tok) -> None:
    ids = tok.encode(speech(1, 16_000)).ids
    with pytest.raises(InputError, match="transcript"):
        tok.decode(ids)
    with pytest.raises(InputError, match=r"\[0, 63\]"):
        tok.decode(ids + 2**BITS, text_ids=TEXT)
    with pytest.raises(InputError, match="integer"):
        tok.decode(ids.float(), text_ids=TEXT)
    with pytest.raises(InputError, match=r"\[0, 99\]"):
        tok.decode(ids, text_ids=[[1, VOCAB]])
    with pytest.raises(InputError, match="not both"):
        tok.decode(ids, text="a", text_ids=TEXT)
    with pytest.raises(InputError, match="one per item"):
        tok.decode(torch.cat([ids, ids]), text_ids=[[1], [2], [3]])
    with pytest.raises(InputError, match="nothing is left"):
        tok.decode(ids, text_ids=TEXT, prompt_mel=torch.zeros(1, FACTOR * ids.shape[1], MELS))
    with pytest.raises(InputError, match="prompt_mel"):
        tok.decode(ids, text_ids=TEXT, prompt_mel=torch.zeros(1, 3, MELS + 1))
    with pytest.raises(InputError, match="noise"):
        tok.decode(ids, text_ids=TEXT, noise=torch.zeros(1, 3, MELS))
    with pytest.raises(InputError, match="unknown decode option"):
        tok.decode(ids, text_ids=TEXT, temperature=0.5)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="num_heads"):
        create_tokenizer("tadicodec-tiny", num_heads=3)
    with pytest.raises(ConfigError, match="input_channels"):
        create_tokenizer("tadicodec-tiny", n_mels=20)
    with pytest.raises(ConfigError, match="solver"):
        create_tokenizer("tadicodec-tiny", solver="rk4")
    with pytest.raises(ConfigError, match="part"):
        create_tokenizer("tadicodec-tiny").decoder_module("everything")

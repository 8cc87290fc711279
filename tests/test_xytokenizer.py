"""XY-Tokenizer on the tiny variant: the fast path against the faithful 30 s path, windows, batches,
upstream id layouts, the converter (both vocoder layouts), training step and bad input.

`encode_ids_padded` is upstream's own computation (every window zero-padded to 30 s, all 3000 mel frames
encoded, attention masked); test_xytokenizer_parity.py checks it and the fast path against upstream's
numbers. Here the fast path must give its ids on any length, including the lengths where the margin
logic changes (a partial last hop, odd frame counts, the last 20 ms of a 30 s window).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import registry
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from zoo.xytokenizer import TIE_GAP, XYTokenizer, config_from_upstream

SR = 16000
SPT = 1280  # samples per code


# -- helpers -----------------------------------------------------------------------------------------
def tiny(**overrides: Any) -> XYTokenizer:
    torch.manual_seed(0)
    tok = registry.create_tokenizer("xytokenizer-tiny", **overrides).eval()
    for buffer in (tok.semantic_encoder.positional_embedding, tok.post_rvq_adapter.positional_embedding):
        buffer.normal_(0, 0.5)  # random tables: the model must use the state dict's, not recomputed sinusoids
    return tok


def speechlike(seconds: float, seed: int = 0, noise: float = 0.01) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(round(seconds * SR))
    t = torch.arange(n, dtype=torch.float64) / SR
    f0 = 110 + 30 * seed + 40 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    voice = sum(torch.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.5 * t + seed)
    return (0.3 * envelope * voice + noise * torch.randn(n, generator=gen, dtype=torch.float64)).float()


def assert_ids_agree(tok: XYTokenizer, ours: torch.Tensor, reference: torch.Tensor, wave: torch.Tensor) -> None:
    """Equal ids, except where the reference clip's RVQ has a near tie (rounding may pick either code)."""
    assert ours.shape == reference.shape
    differ = (ours != reference).any(-1)
    if bool(differ.any()):
        with torch.no_grad():
            z = tok.quantizer_in(tok.latent(wave.reshape(1, 1, -1)))[0, : reference.shape[0]]
        gaps = tok.rvq_gaps(z, reference)
        assert bool((gaps[differ] < TIE_GAP).all()), f"ids differ at {differ.nonzero().flatten().tolist()} off ties"


def upstream_config(tok: XYTokenizer, output_rate: int | None = None) -> dict[str, Any]:
    """The upstream YAML (`generator_params`) that describes `tok`'s architecture."""
    c = tok.config
    ffn = c.dim * c.mlp_ratio
    width = c.dim * c.downsample
    whisper = {"num_mel_bins": c.n_mels, "sampling_rate": c.sample_rate, "hop_length": c.hop_length,
               "stride_size": c.stride, "kernel_size": 3, "d_model": c.dim, "scale_embedding": False,
               "max_audio_seconds": c.window_seconds, "activation_function": "gelu"}

    def adapter(inp: int, out: int, layers: int, positions: int) -> dict[str, int]:
        return {"input_dim": inp, "output_dim": out, "d_model": c.dim, "max_source_positions": positions,
                "encoder_layers": layers, "encoder_attention_heads": c.heads, "encoder_ffn_dim": ffn}

    params: dict[str, Any] = {
        "feature_extractor_kwargs": {"chunk_length": c.window_seconds, "feature_size": c.n_mels,
                                     "hop_length": c.hop_length, "n_fft": c.n_fft, "sampling_rate": c.sample_rate},
        "semantic_encoder_kwargs": {**whisper, "encoder_layers": c.encoder_layers,
                                    "encoder_attention_heads": c.heads, "encoder_ffn_dim": ffn},
        "semantic_encoder_adapter_kwargs": adapter(c.dim, c.dim, c.semantic_adapter_layers, c.max_positions),
        "acoustic_encoder_kwargs": {**whisper, "encoder_layers": c.encoder_layers,
                                    "encoder_attention_heads": c.heads, "encoder_ffn_dim": ffn},
        "pre_rvq_adapter_kwargs": adapter(2 * c.dim, c.dim, c.pre_rvq_layers, c.max_positions),
        "downsample_kwargs": {"d_model": c.dim, "avg_pooler": c.downsample},
        "quantizer_kwargs": {"input_dim": width, "rvq_dim": c.rvq_dim, "output_dim": width,
                             "num_quantizers": c.num_quantizers, "codebook_size": c.codebook_size,
                             "codebook_dim": c.rvq_dim, "quantizer_dropout": 0.0, "commitment": 1},
        "post_rvq_adapter_kwargs": adapter(width, width, c.post_rvq_layers, c.post_rvq_max_positions),
        "upsample_kwargs": {"d_model": c.dim, "stride": c.downsample},
        "acoustic_decoder_kwargs": {**whisper, "decoder_layers": c.decoder_layers,
                                    "decoder_attention_heads": c.heads, "decoder_ffn_dim": ffn},
        "vocos_kwargs": {"input_channels": c.n_mels, "dim": c.vocos_dim, "intermediate_dim": c.vocos_intermediate_dim,
                         "num_layers": c.vocos_layers, "n_fft": c.vocos_n_fft, "hop_size": c.vocos_hop_length,
                         "padding": "same"},
    }
    if output_rate is None:
        params["sample_rate"] = c.sample_rate
    else:
        params.update(input_sample_rate=c.sample_rate, output_sample_rate=output_rate)
    return {"generator_params": params}


_BLOCK = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
          "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
          "mlp_ln": "final_layer_norm"}


def upstream_state(tok: XYTokenizer, vocoder: str = "vocos.") -> dict[str, torch.Tensor]:
    """Our weights under upstream's key names, with old-style weight norm (g, v) on the RVQ projections."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tok.state_dict().items():
        value = value.clone()
        if key.startswith(("quantizer_in.weight", "quantizer_out.weight")):
            name = "input_proj" if key.startswith("quantizer_in") else "output_proj"
            v = 2.5 * value.unsqueeze(-1)  # any positive multiple: the fold must normalise it away
            out[f"quantizer.{name}.weight_v"] = v
            out[f"quantizer.{name}.weight_g"] = value.norm(dim=1).reshape(-1, 1, 1)
            continue
        if key.startswith(("quantizer_in.", "quantizer_out.")):
            name = "input_proj" if key.startswith("quantizer_in") else "output_proj"
            out[f"quantizer.{name}.{key.rsplit('.', 1)[1]}"] = value
            continue
        if key.startswith("quantizer.layers."):
            index, leaf = key.split(".")[2:4]
            out[f"quantizer.quantizers.{index}.{leaf}"] = value
            out[f"quantizer.quantizers.{index}.inited"] = torch.tensor([True])
            continue
        key = key.replace("semantic_adapter.", "semantic_encoder_adapter.").replace("vocoder.", vocoder)
        key = key.replace("upsample.weight", "upsample.up_conv.weight").replace(".ln_post.", ".layer_norm.")
        if ".blocks." in key:
            head, rest = key.split(".blocks.")
            index, name = rest.split(".", 1)
            name, leaf = name.rsplit(".", 1)
            key = f"{head}.layers.{index}.{_BLOCK[name]}.{leaf}"
        out[key] = value
    return out


# -- the fast path is the 30 s path ---------------------------------------------------------------------
@pytest.mark.parametrize("samples", [1280, 1281, 24_159, 48_000, 50_399, 16_000 * 7 + 1])
def test_fast_path_gives_the_padded_ids_and_latent(samples: int) -> None:
    tok = tiny()
    wave = speechlike(samples / SR, seed=samples % 5)[None, None]
    with torch.no_grad():
        fast, padded = tok.latent(wave), tok.latent(wave, padded=True)
        assert fast.shape[1] == (math.ceil(samples / 160) // 2) // 4
        assert float((fast - padded[:, : fast.shape[1]]).abs().max()) < 1e-4
        ids = tok.encode_ids(wave)
        assert ids.shape == (1, samples // SPT, tok.config.num_quantizers)
        assert_ids_agree(tok, ids[0], tok.encode_ids_padded(wave)[0], wave)


@pytest.mark.parametrize("samples", [160, 48_000, 48_001, 479_500, 479_900, 480_000])
def test_log_mel_frames_equal_the_30s_mel(samples: int) -> None:
    """Frames 0..L of the short computation are upstream's; near 30 s the cap brings back its end reflection."""
    tok = tiny()
    wave = speechlike(samples / SR, seed=1)[None]
    with torch.no_grad():
        short, full = tok.log_mel(wave), tok.log_mel(wave, padded=True)
    frames = math.ceil(samples / 160)
    assert full.shape[-1] == 3000
    assert short.shape[-1] == min(frames + 1, 3000)
    assert float((short - full[..., : short.shape[-1]]).abs().max()) < 1e-5


def test_full_window_clip_matches_padded_path() -> None:
    """479,900 samples: the mel needs the 30 s window's own end reflection (the `sym_min` cap)."""
    tok = tiny()
    wave = speechlike(479_900 / SR, seed=2)[None, None]
    with torch.no_grad():
        ids = tok.quantizer.encode(tok.quantizer_in(tok.latent(wave)))[:, : 479_900 // SPT]  # one window
        assert_ids_agree(tok, ids[0], tok.encode_ids_padded(wave)[0], wave)


# -- long audio: upstream's windows -----------------------------------------------------------------------
def upstream_windows(tok: XYTokenizer, clip: torch.Tensor) -> torch.Tensor:
    """Upstream `encode` restated: 30 s windows every 20 s, the first 250 codes of each, trimmed to N // 1280."""
    parts = []
    with torch.no_grad():
        for start in range(0, clip.shape[-1], 320_000):
            piece = clip[start : start + 480_000]
            parts.append(tok.encode_ids_padded(piece[None, None])[0][:250])
    return torch.cat(parts)[: clip.shape[-1] // SPT]


@pytest.mark.parametrize("seconds", [320_100 / SR, 25.0, 41.3])  # 320,100: a 100-sample last window
def test_long_audio_follows_upstream_windows(seconds: float) -> None:
    tok = tiny()
    clip = speechlike(seconds, seed=3)
    tokens = tok.encode(clip)
    assert tokens.ids.shape == (1, clip.shape[-1] // SPT, tok.config.num_quantizers)
    reference = upstream_windows(tok, clip)
    assert tokens.ids.shape[1] == reference.shape[0]
    assert float((tokens.ids[0] != reference).any(-1).float().mean()) < 0.02  # only near ties may differ
    assert torch.equal(tok.encode_ids(clip[None, None])[0], tokens.ids[0])


def test_decode_follows_upstream_windows() -> None:
    tok = tiny()
    torch.manual_seed(1)
    ids = torch.randint(0, tok.config.codebook_size, (1, 400, tok.config.num_quantizers))
    with torch.no_grad():
        audio = tok.decode(ids)
        first = tok.decode_ids(ids[:, :375])[..., : 250 * SPT]
        second = tok.decode_ids(ids[:, 250:400])
    assert audio.shape == (1, 1, 400 * SPT)
    assert torch.allclose(audio[..., : 250 * SPT], first, atol=1e-6)
    assert torch.allclose(audio[..., 250 * SPT :], second, atol=1e-6)


# -- batches --------------------------------------------------------------------------------------------
def test_ragged_batch_gives_solo_tokens() -> None:
    tok = tiny()
    clips = [speechlike(s, seed=i) for i, s in enumerate((2.0, 0.7, 3.3, 1.21))]
    batch = torch.zeros(len(clips), 1, max(c.shape[-1] for c in clips))
    for i, c in enumerate(clips):
        batch[i, 0, : c.shape[-1]] = c
        batch[i, 0, c.shape[-1] :] = 0.7  # garbage past each length must not matter
    tokens = tok.encode(batch, lengths=[c.shape[-1] for c in clips])
    assert tokens.lengths.tolist() == [c.shape[-1] // SPT for c in clips]
    assert tokens.original_size.tolist() == [c.shape[-1] for c in clips]
    for i, c in enumerate(clips):
        solo = tok.encode(c).ids[0]
        n = int(tokens.lengths[i])
        assert torch.equal(tokens.ids[i, :n], solo)
        assert bool((tokens.ids[i, n:] == 0).all())


def test_batched_decode_equals_solo() -> None:
    tok = tiny()
    clips = [speechlike(s, seed=i) for i, s in enumerate((1.5, 0.5))]
    batch = torch.zeros(2, 1, clips[0].shape[-1])
    batch[0, 0] = clips[0]
    batch[1, 0, : clips[1].shape[-1]] = clips[1]
    tokens = tok.encode(batch, lengths=[c.shape[-1] for c in clips])
    audio = tok.decode(tokens)
    assert audio.shape == (2, 1, int(tokens.lengths.max()) * SPT)
    for i in range(2):
        solo = tok.decode(tokens.item(i))
        n = int(tokens.lengths[i]) * SPT
        assert torch.allclose(audio[i, :, :n], solo[0], atol=1e-6)
        assert bool((audio[i, :, n:] == 0).all())


# -- layouts, embed, training ---------------------------------------------------------------------------
def test_upstream_layout_round_trip() -> None:
    tok = tiny()
    tokens = tok.encode(speechlike(1.0))
    codes = tok.tokens_to_upstream(tokens)
    assert codes.shape == (tok.config.num_quantizers, 1, tokens.ids.shape[1])
    assert torch.equal(tok.tokens_from_upstream(codes[:, 0]).ids, tokens.ids)
    assert torch.equal(tok.tokens_from_upstream(codes).ids, tokens.ids)
    ragged = tok.tokens_from_upstream([codes[:, 0], codes[:, 0, :5].numpy()])
    assert ragged.lengths.tolist() == [tokens.ids.shape[1], 5]
    assert torch.equal(ragged.ids[1, :5], tokens.ids[0, :5])


def test_embed_and_spec() -> None:
    tok = tiny()
    ids = torch.randint(0, 64, (2, 5, 4))
    assert tok.embed(ids).shape == (2, 5, tok.config.dim * tok.config.downsample)
    assert torch.allclose(tok.embed(ids[..., :2]), tok.quantizer_out(tok.quantizer.decode(ids[..., :2])))
    spec = tok.spec
    assert spec.token_rate == 12.5 and spec.codebook_sizes == (64,) * 4 and spec.sample_rate == SR
    full = registry.create_tokenizer("xytokenizer-emilia", **{"encoder_layers": 1, "decoder_layers": 1,
                                                            "vocos_layers": 1})
    assert full.spec.bitrate == 1000.0
    assert full.output_sample_rate == SR


def test_training_step_has_losses_and_gradients() -> None:
    tok = tiny()
    tok.train()
    x = speechlike(0.5)[None, None].repeat(2, 1, 1)
    out = tok(x)
    assert out["reconstruction"].shape == (2, 1, out["ids"].shape[1] * SPT)
    loss = out["reconstruction"].abs().mean() + sum(out["losses"].values())
    loss.backward()
    assert tok.semantic_encoder.conv1.weight.grad is not None
    assert tok.vocoder.head.out.weight.grad is not None


# -- converter --------------------------------------------------------------------------------------------
def test_converter_round_trip_and_generator_container() -> None:
    tok = tiny()
    wave = speechlike(1.3, seed=4)[None, None]
    expected = tok.encode_ids(wave)
    state = upstream_state(tok)
    converted = registry.convert("xytokenizer", {"generator": state, "epoch": 3}, upstream_config(tok))
    assert torch.equal(converted.encode_ids(wave), expected)
    ids = expected[:, :7]
    with torch.no_grad():
        assert torch.allclose(converted.decode_ids(ids), tok.decode_ids(ids), atol=1e-5)
    bare = registry.convert("xytokenizer", upstream_state(tok), upstream_config(tok))
    assert torch.equal(bare.encode_ids(wave), expected)


def test_converter_takes_the_ttsd_layout_with_its_24k_vocoder() -> None:
    tok = tiny(vocos_n_fft=960, vocos_hop_length=240)
    state = upstream_state(tok, vocoder="enhanced_vocos.")
    converted = registry.convert("xytokenizer", state, upstream_config(tok, output_rate=24000))
    assert converted.output_sample_rate == 24000
    ids = torch.randint(0, 64, (1, 6, 4))
    with torch.no_grad():
        audio = converted.decode(ids)
    assert audio.shape == (1, 1, 6 * 1920)
    assert torch.allclose(audio, tok.decode(ids), atol=1e-5)


def test_converter_errors_name_the_problem() -> None:
    tok = tiny()
    state = upstream_state(tok)
    state["discriminator.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="discriminator.conv.weight"):
        registry.convert("xytokenizer", state, upstream_config(tok))
    state = upstream_state(tok)
    state["quantizer.quantizers.2.inited"] = torch.tensor([False])
    with pytest.raises(CheckpointError, match="never initialised"):
        registry.convert("xytokenizer", state, upstream_config(tok))
    state = upstream_state(tok)
    state.update({k.replace("vocos.", "enhanced_vocos."): v for k, v in state.items() if k.startswith("vocos.")})
    with pytest.raises(CheckpointError, match="exactly one"):
        registry.convert("xytokenizer", state, upstream_config(tok))
    state = upstream_state(tok)
    del state["acoustic_decoder.positional_embedding"]
    with pytest.raises(CheckpointError, match="positional_embedding"):
        registry.convert("xytokenizer", state, upstream_config(tok))
    with pytest.raises(ConfigError, match="upstream config"):
        registry.convert("xytokenizer", upstream_state(tok), None)
    cfg = upstream_config(tok)
    cfg["generator_params"]["acoustic_encoder_kwargs"]["d_model"] = 64
    with pytest.raises(UnsupportedError, match="acoustic encoder"):
        config_from_upstream(cfg)
    cfg = upstream_config(tok, output_rate=22050)
    with pytest.raises(ConfigError, match="output_sample_rate"):
        config_from_upstream(cfg)


def test_variant_configs_build_from_their_upstream_config() -> None:
    from registry.config import load_variant_config, model_config

    for name, rate in (("xytokenizer-emilia", 16000), ("xytokenizer-ttsd-v0", 24000)):
        cfg = load_variant_config(name)
        ours = config_from_upstream(cfg.upstream.config)
        assert ours == model_config(XYTokenizer.config_class, cfg.model, where=name)
        assert ours.sample_rate * ours.vocos_hop_length // ours.hop_length == rate


# -- bad input --------------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_a_fix() -> None:
    tok = tiny()
    with pytest.raises(InputError, match="too short"):
        tok.encode(torch.zeros(1000))
    with pytest.raises(InputError, match="downmix"):
        tok.encode(torch.zeros(1, 2, 4000))
    with pytest.raises(InputError, match="NaN"):
        tok.encode(torch.full((4000,), float("nan")))
    with pytest.raises(InputError, match="lengths"):
        tok.encode(torch.zeros(2, 1, 4000), lengths=[4000])
    with pytest.raises(InputError, match="lengths"):
        tok.encode(torch.zeros(2, 1, 4000), lengths=[4000, 5000])
    with pytest.raises(InputError, match="unknown encode option"):
        tok.encode(torch.zeros(4000), overlap_seconds=5)
    with pytest.raises(InputError, match="must lie in"):
        tok.decode(torch.full((1, 3, 4), 64))
    with pytest.raises(InputError, match="integer"):
        tok.decode(torch.zeros(1, 3, 4))
    with pytest.raises(InputError, match="codebooks"):
        tok.decode(torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(InputError, match=r"\(B, T, n_q\)"):
        tok.decode(torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="one window"):
        tok.decode_ids(torch.zeros(1, 376, 4, dtype=torch.long))
    with pytest.raises(InputError, match=r"\(nq, B, T\)"):
        tok.tokens_from_upstream(torch.zeros(9, 1, 3, dtype=torch.long))


def test_save_and_load_round_trip(tmp_path: Any) -> None:
    import zoo

    tok = tiny()
    clip = speechlike(1.0)
    tokens = tok.encode(clip)
    tok.save_pretrained(tmp_path / "model")
    back = zoo.from_pretrained(str(tmp_path / "model"))
    assert isinstance(back, XYTokenizer)
    assert torch.equal(back.encode(clip).ids, tokens.ids)
    tokens.save(tmp_path / "tokens.safetensors")
    loaded = type(tokens).load(tmp_path / "tokens.safetensors")
    assert torch.allclose(back.decode(loaded), tok.decode(tokens), atol=1e-6)

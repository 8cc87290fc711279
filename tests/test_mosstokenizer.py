"""MOSS-Audio-Tokenizer on the tiny variant: contract, masking, causality and window, variable bitrate,
ragged batches, streaming equal to one-shot, precision, converter and bad input.

`mosstokenizer-tiny` has the full model's architecture at toy size (16 samples per frame, 4 codebooks of
64) with windows of 12 / 6 frames, so short clips already run past the causal context.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import registry
import zoo
from registry.config import load_variant_config
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from zoo.mosstokenizer import (
    MossTokenizer,
    MossTokenizerConfig,
    Patch,
    config_from_upstream,
    stage_contexts,
)

HOP = 16


@pytest.fixture(scope="module")
def tok() -> MossTokenizer:
    torch.manual_seed(0)
    return zoo.create_tokenizer("mosstokenizer-tiny").eval()


def wave(batch: int, samples: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 24000.0
    tone = torch.sin(2 * math.pi * (180.0 + 40.0 * torch.rand(batch, 1, 1, generator=g)) * t)
    return (0.4 * tone + 0.2 * torch.randn(batch, 1, samples, generator=g)).float()


# -- contract ----------------------------------------------------------------------------------------


def test_tokens_layout_and_length_contract(tok: MossTokenizer) -> None:
    x = wave(2, 1000, 0)
    tokens = tok.encode(x)
    frames = math.ceil(1000 / HOP)
    assert tokens.ids.shape == (2, frames, 4) and tokens.ids.dtype == torch.long
    assert tokens.grid == (frames,) and tokens.codebook_sizes == (64,) * 4
    assert tokens.lengths.tolist() == [frames, frames] and tokens.original_size.tolist() == [1000, 1000]
    assert tokens.meta["token_rate"] == 1500.0
    assert tok.decode(tokens).shape == (2, 1, 1000)
    assert tok.decode(tokens.ids).shape == (2, 1, frames * HOP)  # bare ids: T * hop samples
    assert torch.equal(tok.encode_ids(x), tokens.ids)
    seq = tokens.to_sequence()
    assert seq.shape == (2, frames * 4) and int(seq.max()) < 4 * 64


def test_spec_of_the_published_model() -> None:
    with torch.device("meta"):
        big = zoo.create_tokenizer("mosstokenizer-24khz")
    spec = big.spec
    assert spec.codebook_sizes == (1024,) * 32 and spec.token_rate == 12.5 and spec.downsample == (1920,)
    assert spec.sample_rate == 24000 and spec.channels == 1 and spec.bitrate == 4000.0
    assert "N=8: 1 kbps" in spec.notes and "N=32: 4 kbps" in spec.notes
    assert stage_contexts(big.config) == ([None, 1000, None, 500, None, 250, None, 125],
                                          [125, None, 250, None, 500, None, 1000, None])
    assert sum(p.numel() for p in big.parameters()) == 1_774_566_400 - 17_920  # weight-norm g vectors folded


def test_patch_is_channel_major_and_inverts() -> None:
    x = torch.randn(2, 12, 3)  # (B, L, C)
    down = Patch(4, down=True)(x)
    assert down.shape == (2, 3, 12)
    for t in range(3):
        for c in range(3):
            for j in range(4):
                assert down[0, t, c * 4 + j] == x[0, t * 4 + j, c]
    assert torch.equal(Patch(4, down=False)(down), x)


# -- masking, causality, window --------------------------------------------------------------------


def test_partial_last_frame_is_masked_like_upstream(tok: MossTokenizer) -> None:
    x = wave(1, 1000, 1)
    y = x.clone()
    y[..., 992:] = -y[..., 992:] + 0.3  # change only the partial 63rd frame
    a, b = tok.encode(x).ids, tok.encode(y).ids
    assert torch.equal(a, b)
    # every codebook of a masked frame searches a zero residual: the code nearest to in_proj(0) = bias
    q = tok.quantizer
    expected = []
    for layer in q.layers:
        probe = F.normalize(layer.in_proj.bias.detach(), dim=-1)
        expected.append(int((F.normalize(layer.codebook.detach(), dim=-1) - probe).pow(2).sum(-1).argmin()))
    assert a[0, -1].tolist() == expected
    # whole frames are not masked: changing the last whole frame changes its latent
    pad = F.pad(x, (0, 8))
    changed = pad.clone()
    changed[..., 992:] += 0.5
    assert not torch.allclose(tok.latent(pad)[0, -1], tok.latent(changed)[0, -1])


def test_encoder_is_causal_with_a_limited_context(tok: MossTokenizer) -> None:
    x = wave(1, 1600, 2)
    later = x.clone()
    later[..., 800:] += 0.5
    with torch.no_grad():
        base = tok.latent(x)
        assert torch.allclose(tok.latent(later)[:, :50], base[:, :50], atol=1e-6, rtol=0)  # causal
        early = x.clone()
        early[..., :160] += 0.5
        moved = tok.latent(early)
    assert (moved[:, :5] - base[:, :5]).abs().max() > 1e-3
    # windows of 12 / 6 frames: the first 160 samples cannot reach frames 60 on
    assert torch.allclose(moved[:, 60:], base[:, 60:], atol=1e-6, rtol=0)


# -- variable bitrate --------------------------------------------------------------------------------


def test_first_n_codebooks(tok: MossTokenizer) -> None:
    x = wave(2, 800, 3)
    full = tok.encode(x)
    for n in (1, 2, 4):
        part = tok.encode(x, num_quantizers=n)
        assert torch.equal(part.ids, full.ids[..., :n])
        assert part.codebook_sizes == (64,) * n and part.to_sequence().shape == (2, 50 * n)
        with torch.no_grad():
            expected = tok.decode_ids(full.ids[..., :n])[..., :800]
        assert torch.allclose(tok.decode(full, num_quantizers=n), expected, atol=1e-6)
        assert torch.allclose(tok.decode(part), expected, atol=1e-6)


# -- batches -----------------------------------------------------------------------------------------


def test_ragged_batch_gives_solo_tokens_and_audio(tok: MossTokenizer) -> None:
    counts = [1000, 777, 480]
    x = wave(3, 1000, 4)  # samples past each clip's end stay noisy: encode must ignore them
    batch = tok.encode(x, lengths=counts)
    audio = tok.decode(batch)
    assert batch.lengths.tolist() == [math.ceil(c / HOP) for c in counts]
    for b, n in enumerate(counts):
        alone = tok.encode(x[b : b + 1, :, :n])
        frames = alone.ids.shape[1]
        assert torch.equal(batch.ids[b, :frames], alone.ids[0])
        assert not batch.ids[b, frames:].any()
        assert torch.allclose(audio[b : b + 1, :, :n], tok.decode(alone), atol=1e-5)
        assert not audio[b, :, n:].any()
        single = batch.item(b)
        assert torch.equal(single.ids, alone.ids)


# -- streaming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [5 * HOP, 37])  # frame-aligned (upstream's rule) and arbitrary
def test_stream_encode_equals_one_shot(tok: MossTokenizer, chunk: int) -> None:
    x = wave(2, 1000, 5)
    stream = tok.encode_stream()
    parts = [stream.push(x[..., i : i + chunk]) for i in range(0, x.shape[-1], chunk)]
    parts.append(stream.flush())
    ids = torch.cat(parts, dim=1)
    assert torch.equal(ids, tok.encode(x).ids)
    for caches in stream.caches.values():  # bounded by the window, not by the clip
        assert all(len(c) <= 11 for c in caches)


def test_stream_encode_first_n_and_aligned_end(tok: MossTokenizer) -> None:
    x = wave(1, 640, 6)
    stream = tok.encode_stream(num_quantizers=2)
    ids = torch.cat([stream.push(x[..., :300]), stream.push(x[..., 300:]), stream.flush()], dim=1)
    assert ids.shape == (1, 40, 2)
    assert torch.equal(ids, tok.encode(x, num_quantizers=2).ids)


@pytest.mark.parametrize("frames", [1, 7])
def test_stream_decode_equals_one_shot(tok: MossTokenizer, frames: int) -> None:
    ids = tok.encode(wave(2, 1000, 7)).ids
    stream = tok.decode_stream()
    audio = torch.cat([stream.push(ids[:, i : i + frames]) for i in range(0, ids.shape[1], frames)], dim=-1)
    with torch.no_grad():
        expected = tok.decode_ids(ids)
    assert audio.shape == expected.shape
    assert (audio - expected).abs().max() <= 1e-4


def test_stream_errors(tok: MossTokenizer) -> None:
    stream = tok.encode_stream()
    stream.push(wave(2, 40, 8))
    with pytest.raises(InputError, match="keep batch"):
        stream.push(wave(1, 40, 8))
    stream.flush()
    with pytest.raises(InputError, match="flushed"):
        stream.push(wave(2, 40, 8))
    short = tok.encode_stream()
    short.push(wave(1, 10, 8))
    with pytest.raises(InputError, match="less than one frame"):
        short.flush()
    with pytest.raises(InputError, match="num_quantizers"):
        tok.encode_stream(num_quantizers=5)


# -- precision -------------------------------------------------------------------------------------


def test_low_precision_keeps_the_quantizer_in_float32() -> None:
    torch.manual_seed(0)
    ref = zoo.create_tokenizer("mosstokenizer-tiny").eval()
    low = zoo.create_tokenizer("mosstokenizer-tiny").eval()
    low.load_state_dict(ref.state_dict())
    low.to(torch.bfloat16)
    assert low.dtype == torch.bfloat16 and low.decoder_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in low.quantizer.parameters())
    x = wave(1, 800, 9)
    tokens = low.encode(x)
    assert tokens.ids.shape == ref.encode(x).ids.shape
    ids = ref.encode(x).ids
    ours, theirs = low.decode(ids), ref.decode(ids)
    assert ours.dtype == torch.float32
    assert (ours - theirs).abs().max() <= 0.05 * theirs.abs().max()  # bf16: close, not bit-exact
    double = zoo.create_tokenizer("mosstokenizer-tiny").eval()
    double.load_state_dict(ref.state_dict())
    double.double()
    assert all(p.dtype == torch.float32 for p in double.quantizer.parameters())
    assert torch.allclose(double.decode(ids).float(), theirs, atol=1e-5)


def test_training_forward_has_gradients(tok: MossTokenizer) -> None:
    model = zoo.create_tokenizer("mosstokenizer-tiny").train()
    out = model(wave(2, 320, 10))
    assert out["reconstruction"].shape == (2, 1, 320) and out["ids"].shape == (2, 20, 4)
    loss = F.mse_loss(out["reconstruction"], wave(2, 320, 10)) + sum(out["losses"].values())
    loss.backward()
    assert model.encoder[1].layers[0].attn.in_proj.weight.grad is not None
    with pytest.raises(InputError, match="multiple of 16"):
        model(wave(1, 100, 10))


# -- upstream layout, converter, persistence ----------------------------------------------------------


def test_upstream_id_layout_round_trip(tok: MossTokenizer) -> None:
    tokens = tok.encode(wave(2, 500, 11))
    codes = tok.tokens_to_upstream(tokens)
    assert codes.shape == (4, 2, tokens.ids.shape[1])
    back = tok.tokens_from_upstream(codes)
    assert torch.equal(back.ids, tokens.ids) and back.original_size is None
    single = tok.tokens_from_upstream(codes[:2, 0])
    assert single.ids.shape == (1, tokens.ids.shape[1], 2)


def _upstream_config(cfg: MossTokenizerConfig) -> dict[str, Any]:
    def stage(s: Any) -> dict[str, Any]:
        if s.kind == "patch":
            return {"module_type": "PatchedPretransform", "patch_size": s.patch_size}
        return {
            "module_type": "Transformer", "input_dimension": s.input_dim, "output_dimension": s.output_dim,
            "d_model": s.d_model, "num_heads": s.num_heads, "num_layers": s.num_layers,
            "dim_feedforward": s.dim_feedforward, "causal": True, "norm": "layer_norm",
            "positional_embedding": "rope", "max_period": s.max_period, "gating": "none",
            "layer_scale": s.layer_scale, "conv_layout": True,
        }

    return {
        "sampling_rate": cfg.sample_rate,
        "downsample_rate": HOP,
        "causal_transformer_context_duration": cfg.context_seconds,
        "encoder_kwargs": [stage(s) for s in cfg.encoder],
        "decoder_kwargs": [stage(s) for s in cfg.decoder],
        "quantizer_type": "rlfq",
        "quantizer_kwargs": {
            "input_dim": cfg.latent_dim, "rvq_dim": cfg.rvq_dim, "output_dim": cfg.decoder_dim,
            "num_quantizers": cfg.num_quantizers, "codebook_size": cfg.codebook_size,
            "codebook_dim": cfg.codebook_dim, "quantizer_type": "rlfq",
        },
    }


_LAYER = {
    "attn.in_proj.weight": "self_attn.in_projs.0.weight", "attn.out_proj.weight": "self_attn.out_projs.0.weight",
    "scale1": "layer_scale_1.scale", "scale2": "layer_scale_2.scale",
}


def _to_upstream_state(tok: MossTokenizer) -> dict[str, torch.Tensor]:
    """Our weights under upstream's names, projections weight-normed with a random per-row split of g and v."""
    g = torch.Generator().manual_seed(3)
    out: dict[str, torch.Tensor] = {}
    for key, value in tok.state_dict().items():
        value = value.clone()
        parts = key.split(".")
        if parts[0] in ("encoder", "decoder"):
            if parts[2] == "layers":
                leaf = ".".join(parts[4:])
                out[f"{parts[0]}.{parts[1]}.transformer.layers.{parts[3]}.{_LAYER.get(leaf, leaf)}"] = value
            else:
                out[key] = value
        elif key.endswith("vq.codebook"):
            out[f"quantizer.quantizers.{parts[2]}.codebook.weight"] = value
        else:
            base = key.replace("quantizer.layers.", "quantizer.quantizers.").rsplit(".", 1)[0]
            if key.endswith(".bias"):
                out[f"{base}.bias"] = value
            else:
                v = value * (0.5 + torch.rand(value.shape[0], 1, generator=g))
                out[f"{base}.parametrizations.weight.original1"] = v[..., None]
                out[f"{base}.parametrizations.weight.original0"] = value.norm(dim=1).reshape(-1, 1, 1)
    return out


def test_converter_round_trip(tok: MossTokenizer) -> None:
    state = _to_upstream_state(tok)
    assert any("parametrizations" in k for k in state) and any(".transformer.layers." in k for k in state)
    converted = registry.convert("mosstokenizer", state, _upstream_config(tok.config))
    assert not state  # every tensor was taken
    assert converted.config == tok.config
    x = wave(2, 700, 12)
    assert torch.equal(converted.encode(x).ids, tok.encode(x).ids)
    ids = tok.encode(x).ids
    assert torch.allclose(converted.decode(ids), tok.decode(ids), atol=1e-5)


def test_converter_reads_sharded_safetensors_through_the_index(tok: MossTokenizer, tmp_path: Path) -> None:
    import json

    from safetensors.torch import save_file

    from registry.checkpoint import read_checkpoint

    state = _to_upstream_state(tok)
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: state[k].contiguous() for k in part}, str(tmp_path / name))
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = read_checkpoint(tmp_path / "model.safetensors.index.json")
    assert sorted(loaded) == keys
    converted = registry.convert("mosstokenizer", loaded, _upstream_config(tok.config))
    x = wave(1, 480, 14)
    assert torch.equal(converted.encode(x).ids, tok.encode(x).ids)


def test_converter_refuses_what_it_cannot_map(tok: MossTokenizer) -> None:
    upstream = _upstream_config(tok.config)
    state = _to_upstream_state(tok)
    state["quantizer.discriminator.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unmapped upstream keys"):
        registry.convert("mosstokenizer", state, upstream)
    state = _to_upstream_state(tok)
    del state["decoder.0.transformer.layers.1.linear2.weight"]
    with pytest.raises(CheckpointError, match="missing keys"):
        registry.convert("mosstokenizer", state, upstream)
    with pytest.raises(UnsupportedError, match="rvq"):
        registry.convert("mosstokenizer", _to_upstream_state(tok), {**upstream, "quantizer_kwargs": {
            **upstream["quantizer_kwargs"], "quantizer_type": "rvq"}})
    gated = [dict(s, gating="silu") if s["module_type"] == "Transformer" else s for s in upstream["encoder_kwargs"]]
    with pytest.raises(UnsupportedError, match="gating"):
        config_from_upstream({**upstream, "encoder_kwargs": gated})
    with pytest.raises(ConfigError, match="downsample_rate"):
        config_from_upstream({**upstream, "downsample_rate": 320})
    with pytest.raises(ConfigError, match="upstream config"):
        registry.convert("mosstokenizer", _to_upstream_state(tok), None)


def test_registered_variant_matches_its_upstream_config() -> None:
    cfg = load_variant_config("mosstokenizer-24khz")
    ours = registry.config.model_config(MossTokenizerConfig, cfg.model, where="mosstokenizer-24khz")
    assert config_from_upstream(cfg.upstream.config) == ours
    assert ours == MossTokenizerConfig()  # the dataclass defaults are the published model
    files = cfg.upstream.files
    assert [f.filename for f in files] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert all(len(f.sha256) == 64 for f in files) and len(cfg.upstream.revision) == 40


def test_save_and_load_round_trip(tok: MossTokenizer, tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path / "ckpt")
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "Variable bitrate" in card and "| 4 | 36 kbps |" in card
    loaded = zoo.from_pretrained(tmp_path / "ckpt")
    x = wave(1, 500, 13)
    assert torch.equal(loaded.encode(x).ids, tok.encode(x).ids)


# -- bad input -----------------------------------------------------------------------------------------


def test_bad_input(tok: MossTokenizer) -> None:
    with pytest.raises(InputError, match="channels"):
        tok.encode(torch.zeros(1, 2, 800))
    with pytest.raises(InputError, match="too short"):
        tok.encode(torch.zeros(1, 1, 15))
    with pytest.raises(InputError, match="NaN"):
        tok.encode(torch.full((1, 1, 800), float("nan")))
    with pytest.raises(InputError, match="floating point"):
        tok.encode(torch.zeros(1, 1, 800, dtype=torch.int16))
    for n in (0, 5, True, 2.0):
        with pytest.raises(InputError, match="num_quantizers"):
            tok.encode(wave(1, 800, 0), num_quantizers=n)
    with pytest.raises(InputError, match="lengths"):
        tok.encode(wave(2, 800, 0), lengths=[800])
    with pytest.raises(InputError, match="lengths"):
        tok.encode(wave(2, 800, 0), lengths=[800, 900])
    with pytest.raises(InputError, match="unknown encode option"):
        tok.encode(wave(1, 800, 0), chunk_duration=0.08)
    ids = tok.encode(wave(1, 800, 0)).ids
    with pytest.raises(InputError, match="must lie in"):
        tok.decode(ids + 64)
    with pytest.raises(InputError, match=r"\(B, T, Q\)"):
        tok.decode(ids[0, :, 0])
    with pytest.raises(InputError, match="integer"):
        tok.decode(ids.float())
    with pytest.raises(InputError, match="hold only"):
        tok.decode(ids[..., :2], num_quantizers=3)
    with pytest.raises(InputError, match="unknown decode option"):
        tok.decode(ids, bandwidth_id=0)
    with pytest.raises(InputError, match=r"\(Q, B, T\)"):
        tok.tokens_from_upstream(torch.zeros(5, 1, 3, dtype=torch.long))

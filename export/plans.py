"""What to export for each family: the graphs (module, example inputs, dynamic axes, check inputs at
other shapes) and the runtime recipe `OnnxTokenizer` follows around them.

Graphs come from the family's own export wrappers (`encoder_module()`, `decoder_module(part)`, ...);
a few small wrappers here expose tensor paths a runtime needs as graphs of their own (MOSS's
decoder with a codebook mask for variable bitrate, TaDiCodec's mel -> ids). Flow decoders (UniFlow,
TaDiCodec) export the single velocity step; the sampling loop runs in numpy (`export.sampler`).
A family without a planner here gets the generic plan: encoder and decoder with a dynamic batch axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim

Inputs = tuple[Tensor, ...]


@dataclass
class GraphPlan:
    """One graph: `module(*example)` is traced; `checks` are inputs at other shapes for verification."""

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    example: Inputs
    dynamic: tuple[dict[int, Any] | None, ...]
    checks: list[Inputs] = field(default_factory=list)
    reference: Callable[..., Any] | None = None  # what the graph must equal (default: the module itself)

    def expected(self, *args: Tensor) -> Any:
        with torch.no_grad():
            return (self.reference or self.module)(*args)


@dataclass
class ExportPlan:
    graphs: list[GraphPlan]
    runtime: dict[str, Any]


class _Fn(nn.Module):
    """A tensor function of the tokenizer as a module, for paths the family exposes as methods only."""

    def __init__(self, tok: nn.Module, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.tok = tok
        self.fn = fn

    def forward(self, *args: Tensor) -> Tensor:
        return self.fn(*args)


# -- sample inputs ----------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def speech(batch: int, samples: int, rate: int, channels: int = 1, seed: int = 0) -> Tensor:
    """Speech-like test audio: a few harmonics with a slow envelope plus a little noise, in [-1, 1]."""
    t = torch.arange(samples, dtype=torch.float64) / rate
    g = _gen(seed)
    out = []
    for _ in range(batch * channels):
        f0 = 100.0 + 150.0 * float(torch.rand(1, generator=g))
        wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 5))
        envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.0 * t + float(torch.rand(1, generator=g)) * 6)
        out.append(0.3 * envelope * wave / 2 + 0.02 * torch.randn(samples, generator=g, dtype=torch.float64))
    return torch.stack(out).reshape(batch, channels, samples).float()


def pixels(*shape: int, seed: int = 0) -> Tensor:
    return torch.rand(*shape, generator=_gen(seed)) * 2 - 1


def codes(high: int, *shape: int, seed: int = 0) -> Tensor:
    return torch.randint(0, high, shape, generator=_gen(seed))


def normal(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _batch() -> Dim:
    return Dim("batch", min=1, max=1024)


# -- audio --------------------------------------------------------------------------------------------


def _wavtokenizer(tok: Any) -> ExportPlan:
    cfg, hop, rate = tok.config, tok.config.hop_length, tok.config.sample_rate
    batch, samples, frames = _batch(), Dim("samples", min=max(hop, 2), max=rate * 3600), Dim("frames", min=2)
    encoder = GraphPlan(
        "encoder", tok.encoder_module(), ("audio",), (speech(2, 40 * hop + 3, rate),),
        ({0: batch, 2: samples},),
        [(speech(1, 23 * hop + hop // 2, rate, seed=1),), (speech(3, 57 * hop, rate, seed=2),)],
    )
    decoder = GraphPlan(
        "decoder", tok.decoder_module(), ("ids",), (codes(cfg.codebook_size, 2, 40),), ({0: batch, 1: frames},),
        [(codes(cfg.codebook_size, 1, 23, seed=1),), (codes(cfg.codebook_size, 3, 57, seed=2),)],
    )
    runtime = {
        "handler": "audio_codec", "codebook_size": cfg.codebook_size, "samples_per_token": hop,
        "min_samples": tok.min_samples, "fixed": {"bandwidth_id": cfg.bandwidth_id},
        "decode": {"samples_per_token": hop, "sample_rate": rate, "trim": "original_size", "batching": "by_length"},
        "meta": {"sample_rate": rate, "token_rate": tok.spec.token_rate},
    }
    return ExportPlan([encoder, decoder], runtime)


class _MossMaskedDecoder(nn.Module):
    """MOSS decode of all codebooks times a 0/1 mask: mask = first n ones decodes the first n codebooks
    (variable bitrate) with one graph; adding 0 * code leaves the sum bit-identical."""

    def __init__(self, tok: Any) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, ids: Tensor, codebook_mask: Tensor) -> Tensor:
        q = self.tok.quantizer
        out = q.layers[0].lookup(ids[..., 0]) * codebook_mask[0]
        for i in range(1, len(q.layers)):
            out = out + q.layers[i].lookup(ids[..., i]) * codebook_mask[i]
        return self.tok.decode_latent(q.output_proj(out))


def _mosstokenizer(tok: Any) -> ExportPlan:
    cfg, hop, rate, q = tok.config, tok.hop, tok.config.sample_rate, tok.config.num_quantizers
    batch, samples, frames = _batch(), Dim("samples", min=hop, max=rate * 3600), Dim("frames", min=2)
    encoder = GraphPlan(
        "encoder", tok.encoder_module(), ("audio",), (speech(2, 40 * hop + 5, rate, cfg.channels),),
        ({0: batch, 2: samples},),
        [(speech(1, 23 * hop + hop // 2, rate, cfg.channels, seed=1),),
         (speech(3, 57 * hop, rate, cfg.channels, seed=2),)],
    )

    def mask(n: int) -> Tensor:
        return (torch.arange(q) < n).float()

    decoder = GraphPlan(
        "decoder", _MossMaskedDecoder(tok), ("ids", "codebook_mask"), (codes(cfg.codebook_size, 2, 40, q), mask(q)),
        ({0: batch, 1: frames}, None),
        [(codes(cfg.codebook_size, 1, 23, q, seed=1), mask(q)), (codes(cfg.codebook_size, 3, 57, q, seed=2), mask(1))],
        reference=lambda ids, m: tok.decode_ids(ids[..., : int(m.sum())]),
    )
    runtime = {
        "handler": "audio_codec", "multi_codebook": True, "num_quantizers": q, "codebook_size": cfg.codebook_size,
        "depth_option": True, "samples_per_token": hop, "min_samples": hop,
        "decode": {"samples_per_token": hop, "sample_rate": rate, "trim": "original_size", "batching": "whole",
                   "codebook_mask": True},
        "meta": {"sample_rate": rate, "token_rate": tok.frame_rate},
    }
    return ExportPlan([encoder, decoder], runtime)


def _xytokenizer(tok: Any) -> ExportPlan:
    cfg, spt, rate, q = tok.config, tok.samples_per_token, tok.config.sample_rate, tok.config.num_quantizers
    batch = _batch()
    samples = Dim("samples", min=spt, max=tok.window_samples)
    frames = Dim("codes", min=1, max=cfg.post_rvq_max_positions)
    encoder = GraphPlan(
        "encoder", tok.encoder_module(), ("audio",), (speech(2, 2 * rate, rate),), ({0: batch, 2: samples},),
        [(speech(3, int(1.37 * rate), rate, seed=1),), (speech(1, 7 * spt + 5, rate, seed=2),)],
    )
    decoder = GraphPlan(
        "decoder", tok.decoder_module(), ("ids",), (codes(cfg.codebook_size, 2, 20, q),), ({0: batch, 1: frames},),
        [(codes(cfg.codebook_size, 1, 7, q, seed=1),), (codes(cfg.codebook_size, 3, 41, q, seed=2),)],
    )
    runtime = {
        "handler": "audio_codec", "multi_codebook": True, "num_quantizers": q, "codebook_size": cfg.codebook_size,
        "samples_per_token": spt, "min_samples": spt,
        "encode_window": {"samples": tok.window_samples, "hop_samples": tok.keep_tokens * spt,
                          "keep_tokens": tok.keep_tokens},
        "decode": {"samples_per_token": tok.output_samples_per_token, "sample_rate": tok.output_sample_rate,
                   "trim": "tokens", "batching": "by_length",
                   "window": {"tokens": tok.window_tokens, "keep": tok.keep_tokens}},
        "meta": {"sample_rate": rate, "token_rate": tok.spec.token_rate, "decode_sample_rate": tok.output_sample_rate},
    }
    return ExportPlan([encoder, decoder], runtime)


def _s3tokenizer(tok: Any) -> ExportPlan:
    cfg, front, rate = tok.config, tok.frontend, tok.config.sample_rate
    batch = _batch()
    samples = Dim("samples", min=max(front.min_samples, cfg.n_fft + 1), max=cfg.window_frames * cfg.hop_length)
    encoder = GraphPlan(
        "encoder", tok.encoder_module(), ("audio",), (speech(2, rate, rate),), ({0: batch, 2: samples},),
        [(speech(1, int(2.37 * rate), rate, seed=1),), (speech(3, int(0.61 * rate), rate, seed=2),)],
    )
    wave_samples = Dim("samples", min=max(front.min_samples, cfg.n_fft + 1))
    frontend = GraphPlan(
        "frontend", front, ("audio",), (speech(2, rate, rate)[:, 0],), ({0: batch, 1: wave_samples},),
        [(speech(1, int(2.37 * rate), rate, seed=1)[:, 0],), (speech(3, int(0.61 * rate), rate, seed=2)[:, 0],)],
    )
    mel_frames = Dim("frames", min=8, max=cfg.window_frames)

    def mels(*seconds: float, seed: int) -> Inputs:
        clips = [speech(1, int(s * rate), rate, seed=seed + i)[0, 0] for i, s in enumerate(seconds)]
        mel, count = front.forward_clips(clips)
        return mel, count

    mel_encoder = GraphPlan(
        "mel_encoder", tok.mel_encoder_module(), ("mel", "mel_lengths"), mels(1.0, 0.63, seed=0),
        ({0: batch, 2: mel_frames}, {0: batch}), [mels(2.5, 0.9, 1.7, seed=1), mels(1.1, seed=4)],
    )
    runtime = {
        "handler": "speech_encoder", "min_samples": front.min_samples,
        "frontend": {"n_fft": front.n_fft, "hop_length": front.hop_length, "pad": front.pad,
                     "drop_last": front.drop_last},
        "strides": list(tok.encoder.strides), "downsample": tok.downsample,
        "window_frames": cfg.window_frames, "window_hop_frames": cfg.window_hop_frames,
        "max_frames_per_pass": cfg.max_frames_per_pass,
        "meta": {"sample_rate": rate, "token_rate": tok.spec.token_rate},
    }
    return ExportPlan([encoder, frontend, mel_encoder], runtime)


def _tadicodec(tok: Any) -> ExportPlan:
    cfg, rate, spt, factor = tok.config, tok.config.sample_rate, tok.samples_per_token, tok.config.down_sample_factor
    n_mels, hidden, vocab, size = cfg.n_mels, cfg.hidden_size, cfg.text_vocab_size, 2**cfg.bits
    batch = _batch()
    samples, ids_len = Dim("samples", min=spt, max=rate * 600), Dim("codes", min=1, max=8192)
    frames, text = Dim("frames", min=factor, max=factor * 8192), Dim("text", min=1, max=4096)
    mel_to_ids = _Fn(tok, lambda mel: tok.quantizer.encode(tok.latent(mel)))
    graphs = [
        GraphPlan("encoder", tok.encoder_module(), ("audio",), (speech(2, 5 * spt + 100, rate),),
                  ({0: batch, 2: samples},),
                  [(speech(1, 3 * spt + 7, rate, seed=1),), (speech(3, 7 * spt, rate, seed=2),)]),
        GraphPlan("mel", _Fn(tok, tok.mel), ("audio",), (speech(2, 5 * spt + 100, rate),), ({0: batch, 2: samples},),
                  [(speech(1, 3 * spt + 7, rate, seed=1),), (speech(3, 7 * spt, rate, seed=2),)]),
        GraphPlan("mel_encoder", mel_to_ids, ("mel",), (normal(2, 5 * factor + 3, n_mels),), ({0: batch, 1: frames},),
                  [(normal(1, 3 * factor, n_mels, seed=1),), (normal(3, 7 * factor + 1, n_mels, seed=2),)]),
        GraphPlan("condition", tok.decoder_module("condition"), ("ids",), (codes(size, 2, 5),),
                  ({0: batch, 1: ids_len},),
                  [(codes(size, 1, 3, seed=1),), (codes(size, 3, 7, seed=2),)]),
    ]

    def velocity_inputs(b: int, n: int, lt: int, seed: int) -> Inputs:
        return (normal(b, n * factor, n_mels, seed=seed), torch.rand(b, generator=_gen(seed)),
                normal(b, n * factor, hidden, seed=seed + 1), codes(vocab, b, lt, seed=seed))

    graphs.append(GraphPlan(
        "velocity", tok.decoder_module("velocity"), ("x", "t", "condition", "text_ids"), velocity_inputs(2, 5, 7, 0),
        ({0: batch, 1: frames}, {0: batch}, {0: batch, 1: frames}, {0: batch, 1: text}),
        [velocity_inputs(1, 3, 4, 1), velocity_inputs(3, 7, 11, 2)],
    ))
    graphs.append(GraphPlan(
        "velocity_uncond", tok.decoder_module("velocity_uncond"), ("x", "t"), velocity_inputs(2, 5, 7, 0)[:2],
        ({0: batch, 1: frames}, {0: batch}), [velocity_inputs(1, 3, 4, 1)[:2], velocity_inputs(3, 7, 11, 2)[:2]],
    ))
    graphs.append(GraphPlan(
        "vocoder", tok.decoder_module("vocoder"), ("mel",), (normal(2, 5 * factor, n_mels),), ({0: batch, 1: frames},),
        [(normal(1, 3 * factor, n_mels, seed=1),), (normal(3, 7 * factor + 2, n_mels, seed=2),)],
    ))
    front = tok.frontend
    runtime = {
        "handler": "speech_flow", "samples_per_token": spt, "factor": factor, "hop_length": cfg.hop_length,
        "n_mels": n_mels, "bits": cfg.bits, "text_vocab_size": vocab,
        "frontend": {"n_fft": front.n_fft, "hop_length": front.hop_length, "pad": front.pad,
                     "drop_last": front.drop_last},
        "flow": {"steps": cfg.sampling_steps, "schedule": cfg.schedule, "solver": cfg.solver,
                 "cfg_scale": cfg.cfg_scale, "rescale": cfg.rescale_cfg},
        "meta": {"sample_rate": rate, "token_rate": tok.spec.token_rate},
    }
    return ExportPlan(graphs, runtime)


# -- image and video -------------------------------------------------------------------------------


def _uniwetok(tok: Any) -> ExportPlan:
    cfg, s, z = tok.config, tok.downsample, tok.config.z_channels
    groups, k = z // cfg.group_bits, cfg.group_bits
    batch, h, w = _batch(), Dim("h", min=2, max=1024), Dim("w", min=2, max=1024)
    encoder = GraphPlan(
        "encoder", tok.encoder_module("ids"), ("image",), (pixels(2, 3, 8 * s, 8 * s),),
        ({0: batch, 2: s * h, 3: s * w},),
        [(pixels(1, 3, 8 * s, 8 * s, seed=1),), (pixels(2, 3, 12 * s, 16 * s, seed=2),)],
    )

    def ids_noise(b: int, gh: int, gw: int, seed: int) -> Inputs:
        return codes(2**k, b, gh, gw, groups, seed=seed), normal(b, gh, gw, z, seed=seed)

    decoder = GraphPlan(
        "decoder", tok.decoder_module("ids"), ("ids", "noise"), ids_noise(2, 8, 8, 0),
        ({0: batch, 1: h, 2: w}, {0: batch, 1: h, 2: w}), [ids_noise(1, 8, 8, 1), ids_noise(2, 6, 10, 2)],
    )
    runtime = {
        "handler": "image_codec", "pad": {"multiple": s, "min_tokens": 2, "mode": "zeros"},
        "ids": "grid", "group_bits": k, "groups": groups, "noise_channels": z, "min_decode_tokens": 2,
        "meta": {"group_bits": k, "bit_order": cfg.bit_order, "bits_per_token": z},
    }
    return ExportPlan([encoder, decoder], runtime)


def _tokenflow(tok: Any) -> ExportPlan:
    size, n, vocab = tok.config.image_size, tok.num_tokens, tok.config.codebook_size
    encoder = GraphPlan(
        "encoder", tok.encoder_module(), ("image",), (pixels(2, 3, size, size),), ({0: _batch()},),
        [(pixels(1, 3, size, size, seed=1),), (pixels(3, 3, size, size, seed=2),)],
    )
    decoder = GraphPlan(
        "decoder", tok.decoder_module(), ("ids",), (codes(vocab, 2, n),), ({0: _batch()},),
        [(codes(vocab, 1, n, seed=1),), (codes(vocab, 3, n, seed=2),)],
    )
    runtime = {
        "handler": "image_codec", "size": [size, size], "ids": "flat", "tokens": n,
        "meta": {"scales": tok.scales, "layout": "flat, scale by scale (coarse first), row-major"},
    }
    return ExportPlan([encoder, decoder], runtime)


def _uniflow(tok: Any) -> ExportPlan:
    cfg, size, g, c = tok.config, tok.config.image_size, tok.grid, tok.config.latent_channels
    ch = cfg.in_channels
    batch = _batch()
    with torch.no_grad():
        width = int(tok.condition(normal(1, g, g, c)).shape[-1])

    def step_inputs(b: int, seed: int) -> Inputs:
        x, cond = normal(b, cfg.in_channels, size, size, seed=seed), normal(b, g * g, width, seed=seed)
        return x, torch.rand(b, generator=_gen(seed)), cond

    graphs = [
        GraphPlan("encoder", tok.encoder_module(), ("image",), (pixels(2, ch, size, size),), ({0: batch},),
                  [(pixels(1, ch, size, size, seed=1),), (pixels(3, ch, size, size, seed=2),)]),
        GraphPlan("condition", tok.decoder_module("condition"), ("latent",), (normal(2, g, g, c),), ({0: batch},),
                  [(normal(1, g, g, c, seed=1),), (normal(3, g, g, c, seed=2),)]),
        GraphPlan("velocity", tok.decoder_module("velocity"), ("x", "t", "condition"), step_inputs(2, 0),
                  ({0: batch}, {0: batch}, {0: batch}), [step_inputs(1, 1), step_inputs(3, 2)]),
    ]
    recipe = tok.flow_recipe()
    runtime = {
        "handler": "image_flow", "size": size, "grid": g, "latent_channels": c, "channels": cfg.in_channels,
        "flow": {"steps": cfg.sampling_steps, "schedule": cfg.schedule, "solver": cfg.solver,
                 "cfg_scale": cfg.cfg_scale},
        "output_scale": recipe["output_scale"], "output_shift": recipe["output_shift"],
        "meta": {"latent_channels": c},
    }
    return ExportPlan(graphs, runtime)


def _omnitokenizer(tok: Any) -> ExportPlan:
    cfg, m, tp, n = tok.config, tok.spatial_multiple, tok.config.temporal_patch_size, tok.config.n_codes
    p = cfg.patch_size
    r = m // p  # tokens per spatial multiple
    batch = _batch()
    h, w = Dim("h", min=1, max=512), Dim("w", min=1, max=512)
    th, tw = Dim("th", min=1, max=4096), Dim("tw", min=1, max=4096)
    groups, frames = Dim("groups", min=0, max=256), Dim("frames", min=1, max=257)
    graphs = [
        GraphPlan("image_encoder", tok.encoder_module(), ("image",), (pixels(2, 3, 2 * m, 3 * m),),
                  ({0: batch, 2: m * h, 3: m * w},),
                  [(pixels(1, 3, 2 * m, 3 * m, seed=1),), (pixels(3, 3, 4 * m, m, seed=2),)]),
        GraphPlan("image_decoder", tok.decoder_module(), ("ids",), (codes(n, 2, 2 * r, 3 * r),),
                  ({0: batch, 1: r * th if r > 1 else th, 2: r * tw if r > 1 else tw},),
                  [(codes(n, 1, 2 * r, 3 * r, seed=1),), (codes(n, 3, 4 * r, r, seed=2),)]),
        GraphPlan("video_encoder", tok.encoder_module(), ("video",), (pixels(2, 3, 2 * tp + 1, 2 * m, 3 * m),),
                  ({0: batch, 2: tp * groups + 1, 3: m * h, 4: m * w},),
                  [(pixels(1, 3, tp + 1, 3 * m, m, seed=1),), (pixels(1, 3, 1, m, 2 * m, seed=2),)]),
        GraphPlan("video_decoder", tok.decoder_module(), ("ids",), (codes(n, 2, 3, 2 * r, 3 * r),),
                  ({0: batch, 1: frames, 2: r * th if r > 1 else th, 3: r * tw if r > 1 else tw},),
                  [(codes(n, 1, 2, 3 * r, r, seed=1),), (codes(n, 3, 1, r, 2 * r, seed=2),)]),
    ]
    runtime = {
        "handler": "image_video", "spatial_multiple": m, "temporal_patch": tp, "pad_mode": cfg.pad_mode,
        "decode_window": cfg.window_size if "w" in cfg.dec_block else None,
    }
    return ExportPlan(graphs, runtime)


# -- fallback -----------------------------------------------------------------------------------------


def _generic(tok: Any) -> ExportPlan:
    """Encoder and decoder with a dynamic batch at the spec's input size (a family without a planner)."""
    spec = tok.spec
    if spec.modality == "audio":
        rate = spec.sample_rate or 16000
        hop = spec.downsample[0] if spec.downsample else 320
        example: Inputs = (speech(2, 40 * hop, rate, spec.channels),)
    else:
        size = tuple(spec.input_size or (64, 64))
        example = (pixels(2, spec.channels, *size),)
    enc = tok.encoder_module()
    with torch.no_grad():
        out = enc(*example)
    checks = [tuple(a[:1] for a in example), tuple(torch.cat([a, a[:1]]) for a in example)]
    graphs = [GraphPlan("encoder", enc, ("media",), example, ({0: _batch()},), checks)]
    if spec.can_decode and spec.export.get("decoder") is None:
        graphs.append(GraphPlan("decoder", tok.decoder_module(), ("tokens",), (out,), ({0: _batch()},),
                                [(out[:1],), (torch.cat([out, out[:1]]),)]))
    return ExportPlan(graphs, {"handler": "tensor"})


PLANNERS: dict[str, Callable[[Any], ExportPlan]] = {
    "mosstokenizer": _mosstokenizer,
    "omnitokenizer": _omnitokenizer,
    "s3tokenizer": _s3tokenizer,
    "tadicodec": _tadicodec,
    "tokenflow": _tokenflow,
    "uniflow": _uniflow,
    "uniwetok": _uniwetok,
    "wavtokenizer": _wavtokenizer,
    "xytokenizer": _xytokenizer,
}


def plan_for(tok: Any) -> ExportPlan:
    """The export plan of a tokenizer: its family's planner, else the generic one."""
    return PLANNERS.get(tok.family, _generic)(tok)

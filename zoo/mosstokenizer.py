"""MOSS-Audio-Tokenizer (CAT, arXiv 2602.10934, OpenMOSS): a purely causal Transformer codec.

24 kHz mono in, 12.5 token frames per second out, 32 residual codebooks of 1024 codes (0.125 kbps
each, 4 kbps in all). No convolution anywhere: the waveform is reshaped into patches
(`PatchedPretransform`, channel-major: out channel `c * p + j` is sample `j` of the patch in channel
`c`) and goes through causal Transformer stages (pre-norm LayerNorm, fused q/k/v, interleaved-pair
RoPE restarting at 0 for each call, a causal window of `context_seconds` worth of frames per stage,
exact GELU FFN without biases, LayerScale), patched down 240 x 2 x 2 x 2 = 1920 samples per frame.
The quantizer is the shared `ResidualLFQ` (upstream "rlfq": projected codes, nearest after l2
normalisation, raw codes decoded); the decoder mirrors the encoder.

Length contract (upstream's): a clip of N samples is zero-padded to T = ceil(N / 1920) frames; the last
frame, when partial, is *masked* in the quantizer (every codebook searches a zero residual), so its ids
are the same for any audio and carry nothing. `decode` trims to the recorded N; bare ids decode to
T * 1920 samples. Clips shorter than one frame are refused (upstream would return only a masked frame).

Variable bitrate: `encode(x, num_quantizers=N)` keeps the first N codebooks and `decode` sums the
codebooks it is given (`decode(tokens, num_quantizers=N)` takes the first N): 0.125 kbps per codebook.

Batches: clips of different lengths (`lengths=`) get the ids they get alone (the model is causal, and
samples past each clip are zeroed). Streaming (`encode_stream()` / `decode_stream()`) carries
key/value caches of `context - 1` positions per layer, so any chunking, and any batch size, gives the
one-shot ids and waveform (upstream's ring buffer of `context` keys cannot, once a chunk of more than
one frame runs past the context, and it refuses batches).

Precision: the checkpoint is float32. `tok.to(torch.bfloat16)` (or `.half()`) runs the Transformer
stages in that dtype: half the memory (3.5 of the 7 GB), and faster where the hardware has bf16 units
(GPUs; on a CPU without them it is slower). The quantizer always stays float32, as upstream computes it.
Low-precision results are not bit-exact with float32: ids flip in the deeper codebooks (bench/mosstokenizer.py
measures how many) and the waveform moves by about a percent of its peak.

Ids: ours (B, T, Q), codebook axis last; upstream's `audio_codes` are (Q, B, T) (`tokens_to_upstream`,
`tokens_from_upstream`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry import register_converter, register_tokenizer
from registry.checkpoint import dig, load_state_strict
from registry.config import plain_config
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from zoo.audio_batch import check_lengths, resample_clips
from zoo.layers.attention import KVCache, MaskSpec, attention
from zoo.layers.quantize import ResidualLFQ
from zoo.layers.rotary import apply_rotary
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, check_ids
from zoo.tokens import Tokens

PATCH, TRANSFORMER = "patch", "transformer"


@dataclass
class MossStageConfig:
    """One stage of the encoder or decoder: a patch reshape or a causal Transformer (upstream's kwargs)."""

    kind: str = TRANSFORMER
    patch_size: int = 0  # patch stages only
    input_dim: int = 0
    output_dim: int = 0
    d_model: int = 0
    num_heads: int = 0
    num_layers: int = 0
    dim_feedforward: int = 0
    layer_scale: float | None = 0.01  # LayerScale init; None: no LayerScale
    max_period: float = 10000.0  # RoPE


def _patch(size: int) -> MossStageConfig:
    return MossStageConfig(kind=PATCH, patch_size=size)


def _block(dim_in: int, dim_out: int, width: int = 768, layers: int = 12) -> MossStageConfig:
    return MossStageConfig(
        input_dim=dim_in,
        output_dim=dim_out,
        d_model=width,
        num_heads=width // 64,
        num_layers=layers,
        dim_feedforward=4 * width,
    )


def _main_encoder() -> list[MossStageConfig]:
    return [
        _patch(240),
        _block(240, 384),
        _patch(2),
        _block(768, 384),
        _patch(2),
        _block(768, 640),
        _patch(2),
        _block(1280, 768, width=1280, layers=32),
    ]


def _main_decoder() -> list[MossStageConfig]:
    return [
        _block(768, 1280, width=1280, layers=32),
        _patch(2),
        _block(640, 768),
        _patch(2),
        _block(384, 768),
        _patch(2),
        _block(384, 240),
        _patch(240),
    ]


@dataclass
class MossTokenizerConfig:
    """Hyperparameters; defaults are the published MOSS-Audio-Tokenizer (24 kHz mono, 1.77B parameters)."""

    sample_rate: int = 24000
    channels: int = 1
    # Each Transformer stage sees int(its frame rate * context_seconds) frames back (itself included);
    # None: unbounded causal attention.
    context_seconds: float | None = 10.0
    encoder: list[MossStageConfig] = field(default_factory=_main_encoder)
    decoder: list[MossStageConfig] = field(default_factory=_main_decoder)
    latent_dim: int = 768  # encoder output = quantizer input
    rvq_dim: int = 512  # residual width inside the quantizer
    decoder_dim: int = 768  # quantizer output = decoder input
    num_quantizers: int = 32
    codebook_size: int = 1024
    codebook_dim: int = 8
    norm_eps: float = 1e-5


# -- building blocks --------------------------------------------------------------------------------


class Patch(nn.Module):
    """Channels-last patching: (B, L, C) <-> (B, L / p, C * p), channel-major like upstream's reshape."""

    def __init__(self, size: int, down: bool) -> None:
        super().__init__()
        self.size = int(size)
        self.down = down

    def forward(self, x: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        batch, length, channels = x.shape
        p = self.size
        if self.down:  # out[t, c * p + j] = x[t * p + j, c]
            return x.reshape(batch, length // p, p, channels).transpose(2, 3).reshape(batch, length // p, channels * p)
        return x.reshape(batch, length, channels // p, p).transpose(2, 3).reshape(batch, length * p, channels // p)

    def extra_repr(self) -> str:
        return f"size={self.size}, down={self.down}"


def rope_table(
    offset: int, length: int, head_dim: int, max_period: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    """(cos, sin) of shape (length, head_dim / 2) at positions offset.. with upstream's float32 formula.

    Upstream builds the frequencies as exp(-i * 2 ln(max_period) / head_dim), which differs from
    max_period ** (-2i / head_dim) by an ulp here and there; positions reach ~1e5 on long audio.
    """
    half = torch.arange(head_dim // 2, device=device, dtype=torch.float32)
    freqs = torch.exp(half * (-math.log(max_period) * 2 / head_dim))
    positions = torch.arange(length, device=device, dtype=torch.float32) + float(offset)
    angles = positions[:, None] * freqs
    return angles.cos(), angles.sin()


class CausalSelfAttention(nn.Module):
    """Fused q/k/v projection, interleaved RoPE, causal window of `context` keys, shared attention backend."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"d_model {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = int(num_heads)
        self.in_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, context: int | None, cache: KVCache | None = None) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.in_proj(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q = apply_rotary(q, cos, sin, interleaved=True)
        k = apply_rotary(k, cos, sin, interleaved=True)
        if cache is not None:
            k, v = cache.extend(k, v)
        keys = k.shape[-2]
        if context is None or (isinstance(keys, int) and keys <= context):
            mask = MaskSpec.causal()
        else:
            mask = MaskSpec.sliding_window(context - 1, 0)  # keys p - context < j <= p, as upstream's bias
        out = attention(q, k, v, mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerLayer(nn.Module):
    """Pre-norm block: x + s1 * attn(norm1(x)), then x + s2 * linear2(gelu(linear1(norm2(x))))."""

    def __init__(self, cfg: MossStageConfig, eps: float) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = CausalSelfAttention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward, bias=False)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d, bias=False)
        scaled = cfg.layer_scale is not None
        self.scale1 = nn.Parameter(torch.full((d,), float(cfg.layer_scale))) if scaled else None
        self.scale2 = nn.Parameter(torch.full((d,), float(cfg.layer_scale))) if scaled else None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, context: int | None, cache: KVCache | None) -> Tensor:
        update = self.attn(self.norm1(x), cos, sin, context, cache)
        x = x + (update if self.scale1 is None else self.scale1 * update)
        update = self.linear2(F.gelu(self.linear1(self.norm2(x))))
        return x + (update if self.scale2 is None else self.scale2 * update)


class CausalTransformer(nn.Module):
    """input_proj -> causal layers -> output_proj, channels last (projections only where widths differ)."""

    def __init__(self, cfg: MossStageConfig, context: int | None, eps: float) -> None:
        super().__init__()
        if cfg.d_model % cfg.num_heads or (cfg.d_model // cfg.num_heads) % 2:
            raise ConfigError(
                f"d_model {cfg.d_model} / num_heads {cfg.num_heads} must give an even head size (RoPE rotates pairs)"
            )
        d = cfg.d_model
        self.context = context
        self.head_dim = d // cfg.num_heads
        self.max_period = float(cfg.max_period)
        self.input_proj = nn.Linear(cfg.input_dim, d, bias=False) if cfg.input_dim != d else nn.Identity()
        self.layers = nn.ModuleList(TransformerLayer(cfg, eps) for _ in range(cfg.num_layers))
        self.output_proj = nn.Linear(d, cfg.output_dim, bias=False) if cfg.output_dim != d else nn.Identity()

    def new_caches(self) -> list[KVCache]:
        keep = None if self.context is None else self.context - 1
        return [KVCache(keep=keep) for _ in self.layers]

    def forward(self, x: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        offset = caches[0].offset if caches else 0
        cos, sin = rope_table(offset, x.shape[1], self.head_dim, self.max_period, x.device)
        x = self.input_proj(x)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, self.context, None if caches is None else caches[i])
        return self.output_proj(x)

    def extra_repr(self) -> str:
        return f"context={self.context}"


def _build_stages(
    stages: Sequence[MossStageConfig], contexts: Sequence[int | None], eps: float, down: bool
) -> nn.ModuleList:
    modules: list[nn.Module] = []
    for cfg, context in zip(stages, contexts, strict=True):
        modules.append(Patch(cfg.patch_size, down) if cfg.kind == PATCH else CausalTransformer(cfg, context, eps))
    return nn.ModuleList(modules)


def stage_contexts(config: MossTokenizerConfig) -> tuple[list[int | None], list[int | None]]:
    """Context (frames) of each encoder and decoder stage: int(frame rate there * context_seconds)."""

    def walk(stages: Sequence[MossStageConfig], rate: float, down: bool) -> tuple[list[int | None], float]:
        out: list[int | None] = []
        for stage in stages:
            if stage.kind == PATCH:
                out.append(None)
                rate = rate / stage.patch_size if down else rate * stage.patch_size
            elif config.context_seconds is None:
                out.append(None)
            else:
                frames = int(rate * config.context_seconds)
                if frames < 1:
                    raise ConfigError(
                        f"context_seconds={config.context_seconds} gives less than one frame at {rate:g} Hz; "
                        "raise it (upstream: 10 s)"
                    )
                out.append(frames)
        return out, rate

    encoder, rate = walk(config.encoder, float(config.sample_rate), True)
    decoder, _ = walk(config.decoder, rate, False)
    return encoder, decoder


def _check_config(cfg: MossTokenizerConfig) -> int:
    """Validate the stage chain; return the samples per frame (product of the encoder's patch sizes)."""
    for name, stages in (("encoder", cfg.encoder), ("decoder", cfg.decoder)):
        for i, stage in enumerate(stages):
            if stage.kind not in (PATCH, TRANSFORMER):
                raise ConfigError(f"{name}[{i}].kind must be {PATCH!r} or {TRANSFORMER!r}; got {stage.kind!r}")
            if stage.kind == PATCH and stage.patch_size < 1:
                raise ConfigError(f"{name}[{i}] is a patch stage with patch_size {stage.patch_size}; it must be >= 1")
            if stage.kind == TRANSFORMER and min(stage.input_dim, stage.output_dim, stage.d_model, stage.num_heads) < 1:
                raise ConfigError(f"{name}[{i}] needs positive input_dim, output_dim, d_model and num_heads")
    width = cfg.channels
    for i, stage in enumerate(cfg.encoder):
        if stage.kind == PATCH:
            width *= stage.patch_size
        elif stage.input_dim != width:
            raise ConfigError(f"encoder[{i}] takes {stage.input_dim} channels but receives {width}")
        else:
            width = stage.output_dim
    if width != cfg.latent_dim:
        raise ConfigError(f"the encoder ends with {width} channels but latent_dim is {cfg.latent_dim}")
    width = cfg.decoder_dim
    for i, stage in enumerate(cfg.decoder):
        if stage.kind == PATCH:
            if width % stage.patch_size:
                raise ConfigError(f"decoder[{i}] unpatches {width} channels by {stage.patch_size}; not divisible")
            width //= stage.patch_size
        elif stage.input_dim != width:
            raise ConfigError(f"decoder[{i}] takes {stage.input_dim} channels but receives {width}")
        else:
            width = stage.output_dim
    if width != cfg.channels:
        raise ConfigError(f"the decoder ends with {width} channels; the audio has {cfg.channels}")
    down = math.prod(s.patch_size for s in cfg.encoder if s.kind == PATCH)
    up = math.prod(s.patch_size for s in cfg.decoder if s.kind == PATCH)
    if down != up:
        raise ConfigError(f"the encoder patches {down} samples per frame but the decoder unpatches {up}")
    return down


# -- the tokenizer ----------------------------------------------------------------------------------


class MossTokenizer(Tokenizer):
    """MOSS-Audio-Tokenizer: audio at `sample_rate` <-> (B, T, num_quantizers) ids at sample_rate / hop Hz."""

    family = "mosstokenizer"
    config_class = MossTokenizerConfig
    parity_cases = ("mosstokenizer/a",)  # ../shared/parity/mosstokenizer/a: the mosstokenizer-24khz checkpoint layout

    def __init__(self, config: MossTokenizerConfig) -> None:
        super().__init__(config)
        self.hop = _check_config(config)
        enc_contexts, dec_contexts = stage_contexts(config)
        self.encoder = _build_stages(config.encoder, enc_contexts, config.norm_eps, down=True)
        self.quantizer = self.build_quantizer()
        self.decoder = _build_stages(config.decoder, dec_contexts, config.norm_eps, down=False)

    def build_quantizer(self) -> ResidualLFQ:
        cfg = self.config
        return ResidualLFQ(
            num_quantizers=cfg.num_quantizers,
            codebook_size=cfg.codebook_size,
            dim=cfg.rvq_dim,
            code_dim=cfg.codebook_dim,
            input_dim=cfg.latent_dim,
            output_dim=cfg.decoder_dim,
        )

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> MossTokenizer:
        """Casts reach the Transformer stages only: the quantizer stays float32, as upstream computes it."""
        super()._apply(fn, recurse)
        if any(p.dtype != torch.float32 for p in self.quantizer.parameters()):
            self.quantizer.float()
        return self

    # -- facts -----------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.hop

    @property
    def spec(self) -> TokenSpec:
        cfg = self.config
        per_codebook = self.frame_rate * math.log2(cfg.codebook_size)
        return TokenSpec(
            modality="audio",
            kind="discrete",
            codebook_sizes=(cfg.codebook_size,) * cfg.num_quantizers,
            latent_dim=cfg.latent_dim,
            token_rate=self.frame_rate,
            downsample=(self.hop,),
            sample_rate=cfg.sample_rate,
            channels=cfg.channels,
            can_decode=True,
            notes=(
                f"variable bitrate: encode(x, num_quantizers=N) / decode the first N of {cfg.num_quantizers} "
                f"residual codebooks, {per_codebook / 1000:g} kbps each ({self.bitrate_table(compact=True)}); "
                "the last partial frame is masked as upstream does; streaming via encode_stream()/decode_stream()"
            ),
        )

    def bitrate_table(self, compact: bool = False) -> str:
        """Bitrate for decoding the first N codebooks (markdown table, or one line with `compact`)."""
        cfg = self.config
        per = self.frame_rate * math.log2(cfg.codebook_size)
        counts = sorted({1, 2, 4, 8, 16, 24, cfg.num_quantizers} & set(range(1, cfg.num_quantizers + 1)))
        if compact:
            return ", ".join(f"N={n}: {n * per / 1000:g} kbps" for n in counts)
        rows = [f"| {n} | {n * per / 1000:g} kbps | {n * self.frame_rate:g} |" for n in counts]
        head = ["| codebooks N | bitrate | tokens / s (all codebooks) |", "|---|---|---|"]
        return "\n".join(head + rows)

    def save_pretrained(self, path: Any, **card: Any) -> str:
        body = "## Variable bitrate\n\nDecode the first N residual codebooks (`encode(x, num_quantizers=N)`):\n\n"
        card.setdefault("body", body + self.bitrate_table())
        return super().save_pretrained(path, **card)

    # -- tensor paths (exported) -----------------------------------------------------------------
    def latent(self, audio: Tensor, caches: dict[int, list[KVCache]] | None = None) -> Tensor:
        """(B, C, N) with N a multiple of hop -> pre-quantizer latent (B, N / hop, latent_dim)."""
        x = audio.transpose(1, 2)
        for i, stage in enumerate(self.encoder):
            x = stage(x, None if caches is None else caches.get(i))
        return x

    def decode_latent(self, quantized: Tensor, caches: dict[int, list[KVCache]] | None = None) -> Tensor:
        """Quantizer output (B, T, decoder_dim) -> audio (B, C, T * hop)."""
        x = quantized.to(self.decoder_dtype)
        for i, stage in enumerate(self.decoder):
            x = stage(x, None if caches is None else caches.get(i))
        return x.transpose(1, 2)

    def encode_ids(self, x: Tensor) -> Tensor:
        """(B, C, N) waveform -> (B, ceil(N / hop), num_quantizers) int64 ids (last partial frame masked)."""
        return self._encode_ids(x, None, None)

    def decode_ids(self, ids: Tensor) -> Tensor:
        """(B, T, n) ids, n <= num_quantizers -> (B, C, T * hop) waveform (no trimming)."""
        return self.decode_latent(self.quantizer.decode(ids))

    def _encode_ids(self, x: Tensor, lengths: Tensor | None, num_quantizers: int | None) -> Tensor:
        samples = x.shape[-1]
        if lengths is not None:  # zero every sample past a clip's end, as its solo padding would be
            inside = torch.arange(samples, device=x.device)[None, :] < lengths[:, None]
            x = x * inside[:, None, :].to(x.dtype)
        x = F.pad(x, (0, (-samples) % self.hop))
        index = torch.arange(x.shape[-1] // self.hop, device=x.device)[None, :]
        mask = index < (samples // self.hop if lengths is None else (lengths // self.hop)[:, None])
        return self.quantizer.encode(self.latent(x), num_quantizers, mask=mask)

    @property
    def decoder_dtype(self) -> torch.dtype:
        for p in self.decoder.parameters():
            return p.dtype
        return torch.float32

    # -- user API --------------------------------------------------------------------------------
    def encode(
        self,
        x: Any,
        lengths: Sequence[int] | Tensor | None = None,
        num_quantizers: int | None = None,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> Tokens:
        """Audio (N,), (C, N) or (B, C, N) at `sample_rate` (default: the model's) -> Tokens (B, T, Q).

        `num_quantizers=N` keeps the first N codebooks (N x 0.125 kbps at 12.5 Hz). `lengths` (B,) gives
        each clip's sample count in a right-padded batch; each clip gets the ids it gets alone.
        """
        if kwargs:
            raise InputError(
                f"unknown encode option(s) {sorted(kwargs)}; mosstokenizer takes lengths=, num_quantizers= and "
                "sample_rate= (streaming: encode_stream())"
            )
        wave = self.prepare(x)
        batch, _, total = wave.shape
        counts = check_lengths(lengths, batch, total)
        if sample_rate is not None and int(sample_rate) != self.config.sample_rate:
            wave, counts = self._resample(wave, counts, sample_rate)
        depth = self._check_depth(num_quantizers)
        short = min(counts)
        if short < self.hop:
            raise InputError(
                f"audio too short: {short} samples; mosstokenizer needs at least one frame of {self.hop} samples "
                f"({self.hop / self.config.sample_rate * 1000:g} ms at {self.config.sample_rate} Hz) because a "
                "partial last frame is masked (upstream behaviour). Pad the clip with silence or leave it out."
            )
        wave = wave[..., : max(counts)]
        ragged = any(c != wave.shape[-1] for c in counts)
        n = torch.tensor(counts, dtype=torch.long)
        with torch.no_grad():
            ids = self._encode_ids(wave, n.to(wave.device) if ragged else None, depth)
        frames = torch.tensor([math.ceil(c / self.hop) for c in counts], dtype=torch.long)
        if ragged:
            keep = torch.arange(ids.shape[1])[None, :] < frames[:, None]
            ids = ids * keep.to(ids.device)[..., None]
        return self._tokens(ids, frames, n)

    def _tokens(self, ids: Tensor, frames: Tensor | None, samples: Tensor | None) -> Tokens:
        tokens = self.make_tokens(
            ids,
            grid=(ids.shape[1],),
            lengths=frames,
            original_size=samples,
            meta={
                "sample_rate": self.config.sample_rate,
                "token_rate": self.frame_rate,
                "num_quantizers": ids.shape[-1],
            },
        )
        return tokens.replace(codebook_sizes=(self.config.codebook_size,) * int(ids.shape[-1]))

    def decode(self, tokens: Tokens | Tensor, num_quantizers: int | None = None, **kwargs: Any) -> Tensor:
        """Tokens or ids (B, T, n) / (T, n) -> audio (B, C, N), from the first `num_quantizers` codebooks.

        Tokens from `encode` are trimmed to each clip's sample count (shorter clips zero-padded past their
        end); bare ids give T * hop samples. Low-precision models return float32 audio.
        """
        if kwargs:
            raise InputError(f"unknown decode option(s) {sorted(kwargs)}; mosstokenizer takes num_quantizers=")
        ids, samples = self._decodable(tokens, num_quantizers)
        batch, steps, _ = ids.shape
        keep = [steps * self.hop] * batch if samples is None else [int(s) for s in torch.as_tensor(samples).reshape(-1)]
        if len(keep) != batch or min(keep) < 1 or max(keep) > steps * self.hop:
            raise InputError(
                f"Tokens.original_size {keep} does not fit ids of {steps} frames ({steps * self.hop} samples)"
            )
        with torch.no_grad():
            audio = self.decode_ids(ids)[..., : max(keep)]
        if audio.dtype not in (torch.float32, torch.float64):
            audio = audio.float()
        for b, n in enumerate(keep):
            audio[b, :, n:] = 0.0
        return audio

    def _decodable(self, tokens: Tokens | Tensor, num_quantizers: int | None) -> tuple[Tensor, Tensor | None]:
        if isinstance(tokens, Tokens):
            if tokens.ids is None:
                raise InputError("these Tokens hold no ids; mosstokenizer decodes discrete ids only")
            ids, samples = tokens.ids, tokens.original_size
        else:
            ids, samples = tokens, None
        ids = torch.as_tensor(ids)
        if ids.dim() == 2:
            ids = ids.unsqueeze(0)
        if ids.dim() != 3:
            raise InputError(
                f"mosstokenizer ids must be (B, T, Q) (or (T, Q)); got shape {tuple(ids.shape)}. Upstream's "
                "(Q, B, T) audio_codes go through tokens_from_upstream first."
            )
        ids = check_ids(ids, (self.config.codebook_size,) * self.config.num_quantizers).to(self.device)
        if num_quantizers is not None:
            depth = self._check_depth(num_quantizers)
            if depth > ids.shape[-1]:
                raise InputError(f"num_quantizers={depth} but the ids hold only {ids.shape[-1]} codebooks")
            ids = ids[..., :depth]
        return ids, samples

    def embed(self, ids: Tensor) -> Tensor:
        """(B, T, n) ids -> (B, T, decoder_dim): the summed, projected code vectors the decoder reads."""
        ids = check_ids(torch.as_tensor(ids), (self.config.codebook_size,) * self.config.num_quantizers)
        return self.quantizer.decode(ids.to(self.device))

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training step on (B, C, N), N a multiple of hop: reconstruction, ids, quantizer losses and usage."""
        if x.shape[-1] % self.hop:
            raise InputError(f"training clips must be a multiple of {self.hop} samples; got {x.shape[-1]}")
        latent = self.latent(x)
        q = self.quantizer(latent)
        audio = self.decode_latent(q.quantized)
        return {"reconstruction": audio, "ids": q.ids, "losses": q.losses, "usage": q.usage, "latent": latent}

    # -- streaming -------------------------------------------------------------------------------
    def encode_stream(self, num_quantizers: int | None = None) -> MossEncodeStream:
        """A chunk-by-chunk encoder: `push(audio)` returns the ids of every completed frame, `flush()` the rest."""
        return MossEncodeStream(self, self._check_depth(num_quantizers))

    def decode_stream(self) -> MossDecodeStream:
        """A chunk-by-chunk decoder: `push(ids)` returns hop samples per frame, as the one-shot decode."""
        return MossDecodeStream(self)

    def new_caches(self, part: str) -> dict[int, list[KVCache]]:
        stages = self.encoder if part == "encoder" else self.decoder
        return {i: s.new_caches() for i, s in enumerate(stages) if isinstance(s, CausalTransformer)}

    # -- upstream id layout ----------------------------------------------------------------------
    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """(B, T, Q) -> upstream's audio_codes (Q, B, T)."""
        if tokens.ids is None:
            raise InputError("these Tokens hold no ids")
        return tokens.ids.permute(2, 0, 1)

    def tokens_from_upstream(self, ids: Any, **kwargs: Any) -> Tokens:
        """Upstream audio_codes (Q, B, T) or (Q, T) -> Tokens without a recorded length (decode: T * hop)."""
        if kwargs:
            raise InputError(f"unknown option(s) {sorted(kwargs)} for tokens_from_upstream")
        codes = torch.as_tensor(ids)
        if codes.dim() == 2:
            codes = codes.unsqueeze(1)
        if codes.dim() != 3 or not 1 <= codes.shape[0] <= self.config.num_quantizers:
            raise InputError(
                f"upstream audio_codes must be (Q, B, T) or (Q, T) with 1 <= Q <= {self.config.num_quantizers}; "
                f"got shape {tuple(codes.shape)}"
            )
        ids = check_ids(codes.permute(1, 2, 0), (self.config.codebook_size,) * self.config.num_quantizers)
        return self._tokens(ids.contiguous(), None, None)

    # -- helpers ---------------------------------------------------------------------------------
    def _check_depth(self, num_quantizers: int | None) -> int:
        total = self.config.num_quantizers
        if num_quantizers is None:
            return total
        if isinstance(num_quantizers, bool) or not isinstance(num_quantizers, int) or not 1 <= num_quantizers <= total:
            raise InputError(
                f"num_quantizers must be an int in [1, {total}] (the first N residual codebooks, "
                f"{self.frame_rate * math.log2(self.config.codebook_size) / 1000:g} kbps each); got {num_quantizers!r}"
            )
        return num_quantizers

    def _resample(self, wave: Tensor, counts: list[int], rate: int) -> tuple[Tensor, list[int]]:
        return resample_clips(wave, counts, rate, self.config.sample_rate, "mosstokenizer")


# -- streaming --------------------------------------------------------------------------------------


class MossEncodeStream:
    """Encode audio pushed in chunks of any size; the ids equal the one-shot `encode` of the whole clip.

    Samples are buffered until a whole frame (hop samples) is there; each Transformer layer keeps the
    keys/values of its last `context - 1` positions. `flush()` encodes the partial last frame (masked,
    as the one-shot path does) and ends the stream. All batch items advance together.
    """

    def __init__(self, tok: MossTokenizer, num_quantizers: int) -> None:
        self.tok = tok
        self.num_quantizers = num_quantizers
        self.caches = tok.new_caches("encoder")
        self.pending: Tensor | None = None
        self.samples = 0
        self.frames = 0
        self.closed = False

    def push(self, audio: Any) -> Tensor:
        """(B, C, n) (or (C, n), (n,)) samples -> ids (B, t, num_quantizers) of the frames they complete."""
        if self.closed:
            raise InputError("this encode stream was flushed; start a new one with tok.encode_stream()")
        chunk = self.tok.prepare(audio)
        if self.pending is not None and chunk.shape[:2] != self.pending.shape[:2]:
            raise InputError(
                f"stream chunks must keep batch and channels {tuple(self.pending.shape[:2])}; "
                f"got {tuple(chunk.shape[:2])}"
            )
        buffered = chunk if self.pending is None else torch.cat((self.pending, chunk), dim=-1)
        self.samples += chunk.shape[-1]
        whole = buffered.shape[-1] - buffered.shape[-1] % self.tok.hop
        self.pending = buffered[..., whole:]
        return self._run(buffered[..., :whole], masked=False)

    def flush(self) -> Tensor:
        """Ids of the last, partial frame (empty (B, 0, Q) when the clip ended on a frame boundary)."""
        if self.closed:
            raise InputError("this encode stream was flushed already")
        self.closed = True
        if self.samples < self.tok.hop:
            raise InputError(
                f"the stream held {self.samples} samples, less than one frame ({self.tok.hop}); the one-shot path "
                "refuses such clips too. Pad with silence."
            )
        assert self.pending is not None
        rest = self.pending
        if rest.shape[-1] == 0:
            return self._run(rest, masked=False)
        return self._run(F.pad(rest, (0, self.tok.hop - rest.shape[-1])), masked=True)

    def _run(self, audio: Tensor, masked: bool) -> Tensor:
        frames = audio.shape[-1] // self.tok.hop
        if frames == 0:
            return torch.zeros(audio.shape[0], 0, self.num_quantizers, dtype=torch.long, device=audio.device)
        with torch.no_grad():
            latent = self.tok.latent(audio, self.caches)
            mask = None
            if masked:
                mask = torch.zeros(audio.shape[0], frames, dtype=torch.bool, device=audio.device)
            ids = self.tok.quantizer.encode(latent, self.num_quantizers, mask=mask)
        self.frames += frames
        return ids


class MossDecodeStream:
    """Decode ids pushed a few frames at a time; the audio equals the one-shot `decode_ids` of all of them."""

    def __init__(self, tok: MossTokenizer) -> None:
        self.tok = tok
        self.caches = tok.new_caches("decoder")
        self.frames = 0

    def push(self, ids: Any) -> Tensor:
        """(B, t, n) (or (t, n)) ids -> audio (B, C, t * hop) in the decoder's dtype."""
        ids, _ = self.tok._decodable(ids, None)
        with torch.no_grad():
            audio = self.tok.decode_latent(self.tok.quantizer.decode(ids), self.caches)
        self.frames += ids.shape[1]
        return audio


# -- converter --------------------------------------------------------------------------------------

_SUPPORTED = {"norm": ("layer_norm",), "gating": ("none",), "positional_embedding": ("rope",)}


def _stage_from_upstream(entry: Any, where: str) -> MossStageConfig:
    kind = entry.get("module_type")
    if kind == "PatchedPretransform":
        return _patch(int(entry["patch_size"]))
    if kind != "Transformer":
        raise UnsupportedError(f"{where}: module_type {kind!r} is not supported (PatchedPretransform, Transformer)")
    for key, allowed in _SUPPORTED.items():
        value = entry.get(key, allowed[0])
        if value not in allowed:
            raise UnsupportedError(f"{where}: {key}={value!r} is not supported (only {allowed[0]!r} is published)")
    if not entry.get("causal", False) or entry.get("weights_per_step"):
        raise UnsupportedError(f"{where}: only causal Transformers without per-step weights are supported")
    scale = entry.get("layer_scale")
    return MossStageConfig(
        input_dim=int(entry["input_dimension"]),
        output_dim=int(entry["output_dimension"]),
        d_model=int(entry["d_model"]),
        num_heads=int(entry["num_heads"]),
        num_layers=int(entry["num_layers"]),
        dim_feedforward=int(entry.get("dim_feedforward", 2048)),
        layer_scale=None if scale is None else float(scale),
        max_period=float(entry.get("max_period", 10000)),
    )


def config_from_upstream(upstream_config: Any) -> MossTokenizerConfig:
    """Our config from upstream's config.json (`MossAudioTokenizerConfig` fields, as upstream names them)."""
    if upstream_config is None:
        raise ConfigError(
            "mosstokenizer's converter needs the upstream config.json (encoder_kwargs, decoder_kwargs, "
            "quantizer_kwargs, ...); registered variants carry it under upstream.config"
        )
    cfg: Any = plain_config(upstream_config)
    for key in ("encoder_kwargs", "decoder_kwargs", "quantizer_kwargs"):
        if key not in cfg:
            raise ConfigError(f"upstream config has no `{key}` (keys: {sorted(cfg)}); pass the whole config.json")
    quant = dict(cfg["quantizer_kwargs"])
    qtype = quant.get("quantizer_type", cfg.get("quantizer_type", "rlfq"))
    if qtype not in ("rlfq", "random_prefix_rlfq"):
        raise UnsupportedError(
            f"quantizer_type {qtype!r}: only the residual LFQ ('rlfq', as published) is supported; the plain "
            "'rvq' search (no l2 normalisation) is not implemented"
        )
    encoder = [_stage_from_upstream(e, f"encoder_kwargs[{i}]") for i, e in enumerate(cfg["encoder_kwargs"])]
    decoder = [_stage_from_upstream(e, f"decoder_kwargs[{i}]") for i, e in enumerate(cfg["decoder_kwargs"])]
    first = next((i for i, s in enumerate(encoder) if s.kind == TRANSFORMER), None)
    patch = math.prod(s.patch_size for s in encoder[:first] if s.kind == PATCH) if first is not None else 1
    if first is None or encoder[first].input_dim % patch:
        raise ConfigError("upstream encoder_kwargs must start with patch stages followed by a Transformer")
    input_dim = int(quant.get("input_dim", 1024))
    context = cfg.get("causal_transformer_context_duration", 10.0)
    sample_rate = int(cfg.get("sampling_rate", cfg.get("sample_rate", 24000)))
    config = MossTokenizerConfig(
        sample_rate=sample_rate,
        channels=encoder[first].input_dim // patch,
        context_seconds=None if context is None else float(context),
        encoder=encoder,
        decoder=decoder,
        latent_dim=input_dim,
        rvq_dim=int(quant.get("rvq_dim") or input_dim),
        decoder_dim=int(quant.get("output_dim") or input_dim),
        num_quantizers=int(quant.get("num_quantizers", 32)),
        codebook_size=int(quant.get("codebook_size", 1024)),
        codebook_dim=int(quant.get("codebook_dim", 8)),
    )
    hop = _check_config(config)
    if "downsample_rate" in cfg and int(cfg["downsample_rate"]) != hop:
        raise ConfigError(f"upstream downsample_rate {cfg['downsample_rate']} disagrees with its patch sizes ({hop})")
    return config


def _fold_weight_norm(state: dict[str, Tensor], prefix: str) -> Tensor:
    """Pop a weight-normed 1x1 conv weight (parametrizations or legacy g/v) and return w = g v / |v| (out, in)."""
    pairs = (
        (f"{prefix}.parametrizations.weight.original0", f"{prefix}.parametrizations.weight.original1"),
        (f"{prefix}.weight_g", f"{prefix}.weight_v"),
    )
    for g_key, v_key in pairs:
        if g_key in state and v_key in state:
            g, v = state.pop(g_key).float(), state.pop(v_key).float()
            norm = v.reshape(v.shape[0], -1).norm(dim=1)
            weight = v * (g.reshape(-1) / norm).reshape(-1, *([1] * (v.dim() - 1)))
            return weight.reshape(weight.shape[0], -1)
    if f"{prefix}.weight" in state:  # weight norm already removed upstream
        weight = state.pop(f"{prefix}.weight").float()
        return weight.reshape(weight.shape[0], -1)
    raise CheckpointError(
        f"missing the weight of {prefix} (expected weight-norm original0/original1 or weight_g/weight_v)"
    )


_LAYER_KEYS = {
    "self_attn.in_projs.0.weight": "attn.in_proj.weight",
    "self_attn.in_proj_weight": "attn.in_proj.weight",
    "self_attn.in_proj.weight": "attn.in_proj.weight",
    "self_attn.out_projs.0.weight": "attn.out_proj.weight",
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "linear1.weight": "linear1.weight",
    "linear2.weight": "linear2.weight",
    "layer_scale_1.scale": "scale1",
    "layer_scale_2.scale": "scale2",
}


def _map_stage_key(key: str) -> str | None:
    """encoder.{i}.transformer.layers.{j}.<upstream> -> encoder.{i}.layers.{j}.<ours> (None: not a stage key)."""
    part, _, rest = key.partition(".")
    index, _, rest = rest.partition(".")
    if part not in ("encoder", "decoder") or not index.isdigit():
        return None
    if rest in ("input_proj.weight", "output_proj.weight"):
        return key
    if rest.startswith("transformer.layers."):
        layer, _, leaf = rest[len("transformer.layers.") :].partition(".")
        if layer.isdigit() and leaf in _LAYER_KEYS:
            return f"{part}.{index}.layers.{layer}.{_LAYER_KEYS[leaf]}"
    return None


def convert_mosstokenizer(state_dict: dict[str, Tensor], upstream_config: Any = None, **kwargs: Any) -> MossTokenizer:
    """Upstream state dict (the shards of model.safetensors.index.json, merged) -> MossTokenizer.

    The model is built on the meta device and filled with the upstream tensors themselves
    (`assign=True`); keys are popped from `state_dict` as they are mapped, so conversion holds one copy
    of the weights. Weight norm of the quantizer's 1x1 convs is folded; every key must be mapped.
    """
    if kwargs:
        raise ConfigError(f"unknown converter option(s) {sorted(kwargs)}")
    state = state_dict
    if not any(isinstance(v, Tensor) for v in state.values()):
        state = dig(state, None, where="mosstokenizer checkpoint")
    config = config_from_upstream(upstream_config)
    if not any(k.startswith("encoder.") for k in state):
        raise CheckpointError(
            f"no `encoder.*` keys: this is not a MOSS-Audio-Tokenizer state dict (first keys: {list(state)[:5]})"
        )
    out: dict[str, Tensor] = {}
    for key in [k for k in state if k.startswith(("encoder.", "decoder."))]:
        ours = _map_stage_key(key)
        if ours is not None:
            out[ours] = state.pop(key).float()
    for name in ("input_proj", "output_proj"):
        if config_needs_projection(config, name):
            out[f"quantizer.{name}.weight"] = _fold_weight_norm(state, f"quantizer.{name}")
            out[f"quantizer.{name}.bias"] = state.pop(f"quantizer.{name}.bias").float()
    for q in range(config.num_quantizers):
        theirs, ours = f"quantizer.quantizers.{q}", f"quantizer.layers.{q}"
        if config.rvq_dim != config.codebook_dim:
            for proj in ("in_proj", "out_proj"):
                out[f"{ours}.{proj}.weight"] = _fold_weight_norm(state, f"{theirs}.{proj}")
                out[f"{ours}.{proj}.bias"] = state.pop(f"{theirs}.{proj}.bias").float()
        if f"{theirs}.codebook.weight" not in state:
            raise CheckpointError(f"missing the codebook {theirs}.codebook.weight")
        out[f"{ours}.vq.codebook"] = state.pop(f"{theirs}.codebook.weight").float()
    if state:
        left = sorted(state)
        raise CheckpointError(
            f"unmapped upstream keys ({len(left)}): {', '.join(left[:10])}. The checkpoint does not match the "
            "MOSS-Audio-Tokenizer layout its config.json describes."
        )
    with torch.device("meta"):
        model = MossTokenizer(config)
    model.quantizer = model.build_quantizer()  # small; built for real so its non-persistent buffers exist
    load_state_strict(model, out, where="MOSS-Audio-Tokenizer upstream checkpoint", assign=True)
    meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        raise CheckpointError(f"conversion left tensors unfilled: {meta[:5]}")
    model.eval()
    return model


def config_needs_projection(config: MossTokenizerConfig, name: str) -> bool:
    """Whether upstream's ResidualLFQ has an `input_proj` / `output_proj` (only where widths differ)."""
    if name == "input_proj":
        return config.latent_dim != config.rvq_dim
    return config.rvq_dim != config.decoder_dim


register_tokenizer(MossTokenizer, variants=("mosstokenizer-24khz", "mosstokenizer-tiny"))
register_converter("mosstokenizer", convert_mosstokenizer)

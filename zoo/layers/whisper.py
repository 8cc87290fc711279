"""Whisper-style audio encoder: conv stem, positions, pre-LN attention blocks with key-padding masks.

Shared by the speech tokenizers built on (parts of) Whisper-like ASR encoders (S3Tokenizer,
XY-Tokenizer). Module and parameter names follow OpenAI Whisper's (`conv1`, `conv2`,
`positional_embedding`, `blocks.N.attn.{query,key,value,out}`, `attn_ln`, `mlp.0`, `mlp.2`, `mlp_ln`,
`ln_post`), so upstream state dicts map onto these modules nearly one to one.

Lengths: `lengths` are valid frames per batch item. Each conv (kernel 3, padding 1) maps a length n
to (n - 1) // stride + 1. With lengths given, attention ignores padded keys (`MaskSpec.key_padding`);
padded query frames are still computed (their outputs are whatever the padding gives).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.errors import ConfigError
from zoo.layers.attention import MaskSpec, attention
from zoo.layers.rotary import apply_rotary, rope_1d


def conv_out_length(lengths: Tensor | int, stride: int, kernel: int = 3, padding: int = 1) -> Tensor | int:
    """Output frames of a 1-D conv for `lengths` input frames."""
    return (lengths + 2 * padding - kernel) // stride + 1


def frame_mask(lengths: Tensor, size: int) -> Tensor:
    """(B, size) bool: True on the first `lengths[b]` frames of row b."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's sinusoidal table (length, channels): sin of all frequencies, then cos of all."""
    if channels % 2:
        raise ConfigError(f"sinusoidal positions need an even channel count; got {channels}")
    step = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-step * torch.arange(channels // 2, dtype=torch.float32))
    angle = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (as Whisper does)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


class WhisperAttention(nn.Module):
    """Multi-head self-attention with Whisper's projections (the key projection has no bias).

    `rotary` = (cos, sin) tables of shape (L, head_dim / 2) rotate q and k per head (half-rotation,
    GPT-NeoX layout) before the product.
    """

    def __init__(self, dim: int, heads: int, key_bias: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=key_bias)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: MaskSpec | None, rotary: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """(B, L, D) projections -> (B, L, D) attention output before the `out` projection."""
        q, k, v = self.split(q), self.split(k), self.split(v)
        if rotary is not None:
            q = apply_rotary(q, *rotary, interleaved=False)
            k = apply_rotary(k, *rotary, interleaved=False)
        out = attention(q, k, v, mask=mask, scale=self.head_dim**-0.5)
        return out.transpose(1, 2).flatten(2)

    def forward(
        self,
        x: Tensor,
        mask: MaskSpec | None = None,
        rotary: tuple[Tensor, Tensor] | None = None,
        valid: Tensor | None = None,
    ) -> Tensor:
        """`valid` (B, L, 1) marks real frames; plain attention needs only `mask`, subclasses may use it."""
        return self.out(self.attend(self.query(x), self.key(x), self.value(x), mask, rotary))


class WhisperBlock(nn.Module):
    """Pre-LN residual block: x += attn(attn_ln(x)); x += mlp(mlp_ln(x)) (mlp = Linear, GELU, Linear)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: int = 4,
        attn_ln_eps: float = 1e-5,
        mlp_ln_eps: float = 1e-5,
        attn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.attn = attn if attn is not None else WhisperAttention(dim, heads)
        self.attn_ln = LayerNorm32(dim, eps=attn_ln_eps)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))
        self.mlp_ln = LayerNorm32(dim, eps=mlp_ln_eps)

    def forward(
        self,
        x: Tensor,
        mask: MaskSpec | None = None,
        rotary: tuple[Tensor, Tensor] | None = None,
        valid: Tensor | None = None,
    ) -> Tensor:
        x = x + self.attn(self.attn_ln(x), mask=mask, rotary=rotary, valid=valid)
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """log-mel (B, n_mels, T) -> hidden states (B, T', dim), and output lengths when lengths are given.

    conv1 (k3, p1, `strides[0]`) -> GELU -> conv2 (k3, p1, `strides[1]`) -> GELU, then positions:
    `"table"` adds `positional_embedding[:T']` (a state-dict buffer, initialised to Whisper's
    sinusoids), `"sinusoid"` adds computed sinusoids, `"rotary"` rotates q and k in every block
    (theta `rotary_theta`, all head channels), `"none"` adds nothing. Then the blocks and, when
    `final_norm`, `ln_post`. `mask_conv_inputs` zeroes padded frames before each conv (S3Tokenizer);
    `zero_padding_output` zeroes the output past each length (XY-Tokenizer). `block` builds block i
    (default: `WhisperBlock(dim, heads, ...)`).
    """

    def __init__(
        self,
        n_mels: int,
        dim: int,
        heads: int,
        layers: int,
        strides: tuple[int, int] = (1, 2),
        positions: str = "sinusoid",
        max_positions: int = 1500,
        rotary_theta: float = 10000.0,
        mlp_ratio: int = 4,
        attn_ln_eps: float = 1e-5,
        mlp_ln_eps: float = 1e-5,
        final_norm: bool = False,
        mask_conv_inputs: bool = True,
        zero_padding_output: bool = False,
        block: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if positions not in ("table", "sinusoid", "rotary", "none"):
            raise ConfigError(f"positions must be 'table', 'sinusoid', 'rotary' or 'none'; got {positions!r}")
        self.strides = (int(strides[0]), int(strides[1]))
        self.positions = positions
        self.max_positions = int(max_positions)
        self.heads = heads
        self.head_dim = dim // heads
        self.rotary_theta = float(rotary_theta)
        self.mask_conv_inputs = mask_conv_inputs
        self.zero_padding_output = zero_padding_output
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, stride=self.strides[0], padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=self.strides[1], padding=1)
        if positions == "table":
            self.register_buffer("positional_embedding", sinusoids(max_positions, dim))
        make = block or (
            lambda i: WhisperBlock(dim, heads, mlp_ratio=mlp_ratio, attn_ln_eps=attn_ln_eps, mlp_ln_eps=mlp_ln_eps)
        )
        self.blocks = nn.ModuleList([make(i) for i in range(layers)])
        self.ln_post = LayerNorm32(dim) if final_norm else None

    @property
    def downsample(self) -> int:
        return self.strides[0] * self.strides[1]

    def output_lengths(self, lengths: Tensor | int) -> Tensor | int:
        return conv_out_length(conv_out_length(lengths, self.strides[0]), self.strides[1])

    def stem(self, mel: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The two convolutions: (B, n_mels, T) -> (B, T', dim) and the output lengths."""
        x = mel
        if lengths is not None and self.mask_conv_inputs:
            x = x * frame_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        x = F.gelu(self.conv1(x))
        if lengths is not None:
            lengths = conv_out_length(lengths, self.strides[0])
            if self.mask_conv_inputs:
                x = x * frame_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        x = F.gelu(self.conv2(x))
        if lengths is not None:
            lengths = conv_out_length(lengths, self.strides[1])
        return x.transpose(1, 2), lengths

    def rotary_table(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        positions = torch.arange(length, device=device, dtype=torch.float32)
        return rope_1d(positions, self.head_dim, self.rotary_theta)

    def forward(self, mel: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x, lengths = self.stem(mel, lengths)
        length = x.shape[1]
        rotary = None
        if self.positions == "table":
            x = x + self.positional_embedding[:length].to(x.dtype)
        elif self.positions == "sinusoid":
            x = x + sinusoids(length, x.shape[-1]).to(device=x.device, dtype=x.dtype)
        elif self.positions == "rotary":
            rotary = self.rotary_table(length, x.device)
        mask = valid = None
        if lengths is not None:
            mask = MaskSpec.key_padding(lengths)
            valid = frame_mask(lengths, length)[:, :, None].to(x.dtype)
        for block in self.blocks:
            x = block(x, mask=mask, rotary=rotary, valid=valid)
        if self.ln_post is not None:
            x = self.ln_post(x)
        if valid is not None and self.zero_padding_output:
            x = x * valid
        return x, lengths


__all__ = [
    "LayerNorm32",
    "WhisperAttention",
    "WhisperBlock",
    "WhisperEncoder",
    "conv_out_length",
    "frame_mask",
    "sinusoids",
]

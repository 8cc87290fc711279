"""OmniTokenizer (Wang et al. 2024, arXiv 2406.09399): one transformer VQ tokenizer for images and videos.

Upstream: github.com/FoundationVision/OmniTokenizer (MIT), checkpoints on `Daniel0724/OmniTokenizer`.
Pixels are cut into 8x8 patches; the first frame is embedded alone and the rest in groups of
`temporal_patch_size` frames, so a clip of `1 + 4k` frames gives `1 + k` latent frames and an image is a
one-frame clip. A spatial transformer (full and 8x8-window attention per frame) is followed by a causal
temporal transformer (attention along time at each position); latents are l2-normalised 8-d vectors
quantized against 8192 codes. The decoder mirrors it (temporal, then spatial, then linear un-patching).

What the architecture needs from the shared backends, and why each piece looks the way it does:

* every attention is `zoo.layers.attention.attention` on the flattened `(T, h, w)` token grid: full
  attention within a frame is `MaskSpec.grid_window(grid, (h, w))`, window blocks are
  `MaskSpec.grid_window(grid, window)` with the Swin table as a per-window bias, temporal blocks are
  `MaskSpec.temporal(grid, causal=True)`;
* upstream has two attention code paths and its checkpoints were trained on either: `sdpa` (its
  default on torch >= 2.1: causal mask only, and no relative bias in spatial layers even when one is
  built) and `legacy` (its non-SDPA branch: ALiBi in causal temporal layers, the continuous position
  bias in spatial layers when `spatial_pos="rel"`). `attention_path` picks one;
* the positional convolution (PEG) of temporal blocks runs on upstream's *reinterpreted* grid (the
  `(b h w) t d` tokens are `reshape`d, not permuted, to `(b, t, h, w, d)`); the trained weights expect
  that, so it is reproduced exactly;
* inputs are canonical `[-1, 1]`; upstream works in `[-0.5, 0.5]`, so pixels are halved on the way in
  and doubled on the way out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.checkpoint import load_state_strict
from registry.errors import CheckpointError, ConfigError, InputError, UnsupportedError
from registry.registry import register_converter, register_tokenizer
from zoo.layers.attention import MaskSpec, attention
from zoo.layers.position_bias import alibi_bias, alibi_slopes, window_relative_index
from zoo.layers.quantize import VectorQuantizer
from zoo.layers.rotary import apply_rotary, rope_2d
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, as_canonical, check_ids, is_exporting
from zoo.tokens import Tokens

BLOCK_KINDS = {"t": "full attention within a frame (with PEG)", "w": "window attention within a frame"}
ATTENTION_PATHS = ("sdpa", "legacy")


@dataclass
class OmniTokenizerConfig:
    """Hyperparameters (defaults: the published `imagenet_k600.ckpt` VQ tokenizer)."""

    image_channels: int = 3
    patch_size: int = 8
    temporal_patch_size: int = 4
    dim: int = 512
    heads: int = 8
    dim_head: int = 64
    ff_mult: float = 4.0
    enc_block: str = "ttww"  # spatial encoder blocks: "t" full attention + PEG, "w" window attention
    dec_block: str = "tttt"
    temporal_depth: int = 4
    window_size: int = 8
    spatial_pos: str = "rope"  # "rope" (2-D RoPE) or "rel" (continuous position bias, legacy path only)
    causal_temporal: bool = True
    causal_peg: bool = True
    attention_path: str = "sdpa"  # "sdpa" or "legacy": which upstream attention branch the weights expect
    n_codes: int = 8192
    codebook_dim: int = 8
    l2_code: bool = True
    resolution: int = 256  # the training size (what `spec.input_size` reports); any size is accepted
    sequence_length: int = 17
    pad_mode: str = "replicate"  # how inputs are padded up to valid sizes: "replicate" or "constant"
    chunk_tokens: int = 4096  # tokens per piece of attention / feed-forward work at inference (less memory)


def check_config(config: OmniTokenizerConfig) -> None:
    """Refuse configurations the architecture cannot build, naming the field and the valid values."""
    for name in ("enc_block", "dec_block"):
        blocks = getattr(config, name)
        bad = sorted(set(blocks) - set(BLOCK_KINDS))
        if not blocks or bad:
            raise ConfigError(
                f"{name}={blocks!r}: expected a non-empty string of block kinds {sorted(BLOCK_KINDS)} "
                f"({'; '.join(f'{k}: {v}' for k, v in BLOCK_KINDS.items())}); upstream's pooling and upsampling "
                "blocks are not used by any published checkpoint and are not supported"
            )
    if config.spatial_pos not in ("rope", "rel"):
        raise ConfigError(f"spatial_pos={config.spatial_pos!r}: expected 'rope' or 'rel'")
    if config.attention_path not in ATTENTION_PATHS:
        raise ConfigError(
            f"attention_path={config.attention_path!r}: expected one of {ATTENTION_PATHS} (upstream's SDPA branch, "
            "its default, or its non-SDPA branch with ALiBi and relative biases)"
        )
    if config.spatial_pos == "rope" and config.dim_head % 4:
        raise ConfigError(f"dim_head={config.dim_head}: 2-D RoPE needs a multiple of 4")
    if config.pad_mode not in ("replicate", "constant"):
        raise ConfigError(f"pad_mode={config.pad_mode!r}: expected 'replicate' or 'constant'")
    for name in ("patch_size", "temporal_patch_size", "dim", "heads", "dim_head", "window_size", "n_codes",
                 "codebook_dim", "chunk_tokens"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}={getattr(config, name)}: expected a positive integer")


# ---------------------------------------------------------------------------------------------- layers


class FixedBiasLayerNorm(nn.Module):
    """Upstream's LayerNorm: a learned gain and a bias kept as a buffer (never trained)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias)


class FeedForward(nn.Module):
    """LayerNorm, GEGLU (value half times gelu of the gate half), projection back; no biases."""

    def __init__(self, dim: int, mult: float) -> None:
        super().__init__()
        inner = int(mult * (2 / 3) * dim)
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, inner * 2, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(F.gelu(gate) * value)


class PositionConv(nn.Module):
    """Upstream's PEG: a depthwise 3x3x3 convolution over a (B, T, H, W, D) grid, causal in time if asked."""

    def __init__(self, dim: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.conv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        y = x.permute(0, 4, 1, 2, 3)
        y = F.pad(y, (1, 1, 1, 1, 2, 0) if self.causal else (1, 1, 1, 1, 1, 1))
        return self.conv(y).permute(0, 2, 3, 4, 1)


def table_bias(table: Tensor, window: tuple[Any, Any]) -> Tensor:
    """A ((2wh-1)(2ww-1), heads) relative table read into the (heads, n, n) bias of one window (Swin order).

    `position_bias.window_bias` without its range check, which reads tensor values and cannot export.
    """
    return table[window_relative_index(window, table.device)].permute(2, 0, 1)


class ContinuousPositionBias(nn.Module):
    """Swin-V2 style bias: an MLP of signed log offsets, evaluated once per distinct (dy, dx).

    Upstream runs the MLP on all N^2 token pairs (gigabytes at 32x32 tokens); the (2h-1)(2w-1)
    distinct offsets give the same values and are gathered into the (heads, N, N) bias.
    """

    def __init__(self, dim: int, heads: int, layers: int = 2) -> None:
        super().__init__()
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(2, dim), nn.LeakyReLU(0.1))])
        for _ in range(layers - 1):
            self.net.append(nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)))
        self.net.append(nn.Linear(dim, heads))

    def forward(self, height: int, width: int) -> Tensor:
        device = self.net[-1].weight.device
        dy = torch.arange(-(height - 1), height, device=device)
        dx = torch.arange(-(width - 1), width, device=device)
        offsets = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2).float()
        table = torch.sign(offsets) * torch.log(offsets.abs() + 1)
        for layer in self.net:
            table = layer(table)
        return table_bias(table, (height, width))


class Attention(nn.Module):
    """Upstream's `Attention`: cosine-similarity attention with learned q/k scales and scale 8.

    Only the queries see the pre-norm: keys and values are projected from the un-normalised input.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, rel_bias: bool) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.norm = FixedBiasLayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.position_bias = ContinuousPositionBias(dim, heads) if rel_bias else None

    def forward(
        self, x: Tensor, mask: MaskSpec, rotary: tuple[Tensor, Tensor] | None = None, bias: Tensor | None = None
    ) -> Tensor:
        q = self.to_q(self.norm(x)).unflatten(-1, (self.heads, self.dim_head))
        k, v = (t.unflatten(-1, (self.heads, self.dim_head)) for t in self.to_kv(x).chunk(2, dim=-1))
        if rotary is not None:  # (B, L, H, d); rotated in float32 as upstream does
            cos, sin = rotary
            q = apply_rotary(q.float(), cos, sin, interleaved=True).to(x.dtype)
            k = apply_rotary(k.float(), cos, sin, interleaved=True).to(x.dtype)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        out = attention(q, k, v, mask=mask, bias=bias, scale=8.0)
        return self.to_out(out.transpose(1, 2).flatten(2))


class WindowAttention(nn.Module):
    """Swin-style attention inside non-overlapping windows, with a learned relative position table."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.norm = FixedBiasLayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, grid: tuple[Any, Any, Any]) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = table_bias(self.relative_position_bias_table, (self.window, self.window))
        out = attention(q, k, v, mask=MaskSpec.grid_window(grid, self.window), bias=bias,
                        scale=(dim // self.heads) ** -0.5)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """One transformer layer: [PEG], attention, feed-forward, each residual."""

    def __init__(self, kind: str, config: OmniTokenizerConfig, temporal: bool) -> None:
        super().__init__()
        self.kind = kind
        c = config
        self.peg = PositionConv(c.dim, c.causal_peg) if kind == "t" else None
        if kind == "t":
            rel = (not temporal) and c.spatial_pos == "rel" and c.attention_path == "legacy"
            self.attn: nn.Module = Attention(c.dim, c.heads, c.dim_head, rel_bias=rel)
        else:
            self.attn = WindowAttention(c.dim, c.heads, c.window_size)
        self.ff = FeedForward(c.dim, c.ff_mult)


def chunk_inference(x: Tensor, rows: int) -> bool:
    """Whether to split work on `x` (tokens on all but the last axis) into pieces of <= `rows` tokens.

    Only at inference: the pieces give the same values (the work is independent across them), but
    training needs the whole graph and an exported graph must not depend on the input size.
    """
    return not (torch.is_grad_enabled() or is_exporting()) and x[..., 0].numel() > rows


def chunked_rows(fn: Callable[[Tensor], Tensor], x: Tensor, rows: int) -> Tensor:
    """`fn` (per token) applied to row chunks of a (N, D) view of `x`."""
    if not chunk_inference(x, rows):
        return fn(x)
    out = torch.cat([fn(part) for part in x.reshape(-1, x.shape[-1]).split(rows)])
    return out.reshape(*x.shape[:-1], out.shape[-1])


def chunked_along(fn: Callable[[Tensor], Tensor], x: Tensor, axis: int, rows: int) -> Tensor:
    """`fn` applied to slices of `x` along `axis` of at most `rows` tokens (at least one index each)."""
    if not chunk_inference(x, rows):
        return fn(x)
    per_index = x[..., 0].numel() // x.shape[axis]
    return torch.cat([fn(part) for part in x.split(max(1, rows // per_index), dim=axis)], dim=axis)


class SpatialTransformer(nn.Module):
    """Per-frame blocks over tokens (B, T, h, w, D); the PEG mixes neighbouring frames causally."""

    def __init__(self, blocks: str, config: OmniTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(Block(kind, config, temporal=False) for kind in blocks)
        self.norm_out = FixedBiasLayerNorm(config.dim)

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        height, width = x.shape[2], x.shape[3]
        rotary = None
        if c.spatial_pos == "rope":
            rotary = rope_2d(height, width, c.dim_head, order="xy", layout="interleaved", device=x.device)
        for block in self.blocks:
            if block.peg is not None:
                x = x + block.peg(x)
            x = x + chunked_along(lambda part, blk=block: self._attend(blk, part, rotary), x, 1, c.chunk_tokens)
            x = x + chunked_rows(block.ff, x, c.chunk_tokens)
        return self.norm_out(x)

    @staticmethod
    def _attend(block: Block, x: Tensor, rotary: tuple[Tensor, Tensor] | None) -> Tensor:
        """Attention within each frame of tokens (B, T, h, w, D)."""
        batch, frames, height, width, dim = x.shape
        grid = (frames, height, width)
        flat = x.reshape(batch, frames * height * width, dim)
        if block.kind == "w":
            out = block.attn(flat, grid)
        else:
            attn = block.attn
            tables = None if rotary is None else tuple(t.repeat(frames, 1)[:, None] for t in rotary)
            bias = attn.position_bias(height, width) if attn.position_bias is not None else None
            out = attn(flat, MaskSpec.grid_window(grid, (height, width)), rotary=tables, bias=bias)
        return out.reshape(batch, frames, height, width, dim)


class TemporalTransformer(nn.Module):
    """Blocks along time at each token position (causal), on tokens (B, T, h, w, D)."""

    def __init__(self, depth: int, config: OmniTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(Block("t", config, temporal=True) for _ in range(depth))
        self.norm_out = FixedBiasLayerNorm(config.dim)

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        batch, frames, height, width, dim = x.shape
        bias = None
        if c.attention_path == "legacy" and c.causal_temporal:
            bias = alibi_bias(alibi_slopes(c.heads).to(x.device), frames, frames).to(x.dtype)
        for block in self.blocks:
            assert block.peg is not None
            # Upstream holds these tokens as (b h w) t d and *reshapes* them to (b, t, h, w, d) for the PEG.
            scrambled = x.permute(0, 2, 3, 1, 4).reshape(batch, frames, height, width, dim)
            x = x + block.peg(scrambled).reshape(batch, height, width, frames, dim).permute(0, 3, 1, 2, 4)
            x = x + chunked_along(lambda part, blk=block: self._attend(blk, part, bias), x, 2, c.chunk_tokens)
            x = x + chunked_rows(block.ff, x, c.chunk_tokens)
        return self.norm_out(x)

    def _attend(self, block: Block, x: Tensor, bias: Tensor | None) -> Tensor:
        """Attention along time at each position of tokens (B, T, h, w, D)."""
        batch, frames, height, width, dim = x.shape
        grid = (frames, height, width)
        flat = x.reshape(batch, frames * height * width, dim)
        out = block.attn(flat, MaskSpec.temporal(grid, causal=self.config.causal_temporal), bias=bias)
        return out.reshape(batch, frames, height, width, dim)


class PatchEmbed(nn.Module):
    """LayerNorm over the flattened patch, linear projection, LayerNorm."""

    def __init__(self, patch_values: int, dim: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(patch_values)
        self.proj = nn.Linear(patch_values, dim)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm_out(self.proj(self.norm_in(x)))


def patchify(x: Tensor, frames: int, patch: int) -> Tensor:
    """(B, C, t*frames, h*p, w*p) -> (B, t, h, w, C*frames*p*p), values ordered (c, frame, row, col)."""
    b, c, t, height, width = x.shape
    x = x.reshape(b, c, t // frames, frames, height // patch, patch, width // patch, patch)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, t // frames, height // patch, width // patch, c * frames * patch * patch)


def unpatchify(x: Tensor, channels: int, frames: int, patch: int) -> Tensor:
    """The inverse of `patchify`: (B, t, h, w, C*frames*p*p) -> (B, C, t*frames, h*p, w*p)."""
    b, t, h, w, _ = x.shape
    x = x.reshape(b, t, h, w, channels, frames, patch, patch)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, channels, t * frames, h * patch, w * patch)


class Encoder(nn.Module):
    def __init__(self, config: OmniTokenizerConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        pixels = c.image_channels * c.patch_size**2
        self.first_frame_embed = PatchEmbed(pixels, c.dim)
        self.frames_embed = PatchEmbed(pixels * c.temporal_patch_size, c.dim)
        self.spatial = SpatialTransformer(c.enc_block, c)
        self.temporal = TemporalTransformer(c.temporal_depth, c)

    def forward(self, video: Tensor) -> Tensor:
        """(B, C, 1 + k*tp, H, W) in upstream's [-0.5, 0.5] -> (B, 1 + k, H/p, W/p, dim)."""
        c = self.config
        tokens = self.first_frame_embed(patchify(video[:, :, :1], 1, c.patch_size))
        if video.shape[2] > 1:
            rest = self.frames_embed(patchify(video[:, :, 1:], c.temporal_patch_size, c.patch_size))
            tokens = torch.cat([tokens, rest], dim=1)
        return self.temporal(self.spatial(tokens))


class Decoder(nn.Module):
    def __init__(self, config: OmniTokenizerConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        pixels = c.image_channels * c.patch_size**2
        self.temporal = TemporalTransformer(c.temporal_depth, c)
        self.spatial = SpatialTransformer(c.dec_block, c)
        self.first_frame_out = nn.Linear(c.dim, pixels)
        self.frames_out = nn.Linear(c.dim, pixels * c.temporal_patch_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, 1 + k, h, w, dim) -> (B, C, 1 + k*tp, h*p, w*p) in upstream's range."""
        c = self.config
        tokens = self.spatial(self.temporal(tokens))
        video = unpatchify(self.first_frame_out(tokens[:, :1]), c.image_channels, 1, c.patch_size)
        if tokens.shape[1] > 1:
            rest = unpatchify(self.frames_out(tokens[:, 1:]), c.image_channels, c.temporal_patch_size, c.patch_size)
            video = torch.cat([video, rest], dim=2)
        return video


# ------------------------------------------------------------------------------------------ tokenizer


class OmniTokenizer(Tokenizer):
    """Images `(B, C, H, W)` and videos `(B, C, T, H, W)` in [-1, 1] <-> ids `(B, h, w)` / `(B, t, h, w)`.

    Sizes upstream cannot take are padded (edge replication by default, `pad_mode`) and cropped back
    on decode: H and W up to a multiple of `patch_size` (times `window_size` when window blocks are
    present), and T up to the next `1 + k * temporal_patch_size`. `Tokens.original_size` keeps
    `(H, W)` for images and `(T, H, W)` for videos.
    """

    family = "omnitokenizer"
    config_class = OmniTokenizerConfig
    parity_cases = ("omnitokenizer/a",)  # ../shared/parity/omnitokenizer/a: imagenet_k600.ckpt, image and video

    def __init__(self, config: OmniTokenizerConfig) -> None:
        check_config(config)
        super().__init__(config)
        c = config
        self.encoder = Encoder(c)
        self.quant_proj = nn.Linear(c.dim, c.codebook_dim)
        self.quantizer = VectorQuantizer(
            c.n_codes, c.codebook_dim, metric="euclidean", normalize_codes=False, normalize_inputs=c.l2_code,
            normalized_decode=False, commitment_weight=0.25,
        )
        self.post_quant_proj = nn.Linear(c.codebook_dim, c.dim)
        self.decoder = Decoder(c)

    # -- facts ---------------------------------------------------------------------------------------
    @property
    def spec(self) -> TokenSpec:
        c = self.config
        return TokenSpec(
            modality="video",
            kind="discrete",
            codebook_sizes=(c.n_codes,),
            latent_dim=c.codebook_dim,
            downsample=(c.temporal_patch_size, c.patch_size, c.patch_size),
            channels=c.image_channels,
            input_size=(c.sequence_length, c.resolution, c.resolution),
            notes=(
                "joint image/video tokenizer: images (B,C,H,W) give ids (B,h,w); videos give (B,1+k,h,w), the "
                f"first frame alone and then groups of {c.temporal_patch_size} frames; sizes are padded to "
                f"multiples of {self.spatial_multiple} px and 1+{c.temporal_patch_size}k frames, cropped on decode"
            ),
        )

    @property
    def spatial_multiple(self) -> int:
        """Pixels H and W are padded to a multiple of this (window blocks need whole windows of tokens)."""
        c = self.config
        windows = "w" in c.enc_block or "w" in c.dec_block
        return c.patch_size * (c.window_size if windows else 1)

    def valid_frames(self, frames: int) -> int:
        """The smallest frame count >= `frames` upstream accepts (1 + k * temporal_patch_size)."""
        tp = self.config.temporal_patch_size
        return 1 + math.ceil(max(frames - 1, 0) / tp) * tp

    # -- tensor paths (exported) ---------------------------------------------------------------------
    def encode_latent(self, x: Tensor) -> Tensor:
        """Canonical (B, C, H, W) or (B, C, T, H, W) of valid size -> pre-quantizer latent (B, [t,] h, w, d)."""
        image = x.dim() == 4
        video = x.unsqueeze(2) if image else x
        latent = self.quant_proj(self.encoder(video * 0.5))
        return latent[:, 0] if image else latent

    def encode_ids(self, x: Tensor) -> Tensor:
        """Canonical image (B, C, H, W) -> ids (B, h, w); video (B, C, T, H, W) -> ids (B, t, h, w)."""
        return self.quantizer.encode(self.encode_latent(x))

    def decode_latent(self, codes: Tensor) -> Tensor:
        """Code vectors (B, h, w, d) -> image (B, C, H, W); (B, t, h, w, d) -> video (B, C, T, H, W)."""
        image = codes.dim() == 4
        tokens = self.post_quant_proj(codes.unsqueeze(1) if image else codes)
        video = self.decoder(tokens) * 2.0
        return video[:, :, 0] if image else video

    def decode_ids(self, ids: Tensor) -> Tensor:
        """Ids (B, h, w) -> image (B, C, H, W); ids (B, t, h, w) -> video (B, C, 1+4(t-1), H, W); no cropping."""
        return self.decode_latent(self.quantizer.lookup(ids))

    # -- user paths ------------------------------------------------------------------------------------
    def to_video(self, x: Any) -> tuple[Tensor, bool]:
        """Any accepted input as a checked (B, C, T, H, W) tensor on this model, and whether it was an image."""
        if isinstance(x, (list, tuple)):
            x = self._stack_frames(x)
        if isinstance(x, (Tensor, np.ndarray)) and x.ndim == 5 and x.shape[2] == 0:
            raise InputError(
                f"the video has 0 frames (shape {tuple(x.shape)}, laid out (B, C, T, H, W)); pass at least one "
                "frame, or an image as (B, C, H, W)"
            )
        ndim = x.ndim if isinstance(x, (Tensor, np.ndarray)) else None
        image = ndim in (3, 4)
        x = as_canonical(x, "image" if image else "video", self.config.image_channels)
        x = x.to(device=self.device, dtype=self.dtype)
        return (x.unsqueeze(2) if image else x), image

    def _stack_frames(self, frames: list[Any] | tuple[Any, ...]) -> Tensor:
        if not frames:
            raise InputError("the video has 0 frames (an empty list); pass at least one (C, H, W) frame")
        tensors = [torch.as_tensor(np.ascontiguousarray(f)) if isinstance(f, np.ndarray) else f for f in frames]
        if not all(isinstance(f, Tensor) and f.dim() == 3 for f in tensors):
            raise InputError("a list input is read as video frames: each item must be a (C, H, W) tensor or array")
        sizes = sorted({tuple(f.shape) for f in tensors})
        if len(sizes) > 1:
            raise InputError(
                f"the frames have different sizes {sizes}; a video needs one frame size: resize or crop every "
                "frame to the same (C, H, W) first (e.g. torch.nn.functional.interpolate)"
            )
        return torch.stack(tensors, dim=1).unsqueeze(0)

    def pad_video(self, video: Tensor) -> Tensor:
        """Pad (B, C, T, H, W) at the end of T, H and W up to sizes the network accepts."""
        frames, height, width = video.shape[2:]
        m = self.spatial_multiple
        pad_t = self.valid_frames(frames) - frames
        pad_h, pad_w = (-height) % m, (-width) % m
        if not (pad_t or pad_h or pad_w):
            return video
        if self.config.pad_mode == "replicate":
            return F.pad(video, (0, pad_w, 0, pad_h, 0, pad_t), mode="replicate")
        return F.pad(video, (0, pad_w, 0, pad_h, 0, pad_t))

    def encode(self, x: Any, **kwargs: Any) -> Tokens:
        """Images (B, C, H, W) / videos (B, C, T, H, W) (or a list of (C, H, W) frames) in [-1, 1] -> Tokens."""
        if kwargs:
            raise InputError(f"encode takes no options here; got {sorted(kwargs)}")
        video, image = self.to_video(x)
        batch, _, frames, height, width = video.shape
        padded = self.pad_video(video)
        with torch.no_grad():
            ids = self.encode_ids(padded[:, :, 0] if image else padded)
        size = [height, width] if image else [frames, height, width]
        tokens = self.make_tokens(
            ids,
            grid=tuple(ids.shape[1:]),
            original_size=torch.tensor([size] * batch, dtype=torch.long),
            meta={"padded_size": list(padded.shape[3:] if image else padded.shape[2:]), "input_range": [-1.0, 1.0]},
        )
        return tokens.replace(modality="image") if image else tokens

    def decode(self, tokens: Tokens | Tensor, **kwargs: Any) -> Tensor:
        """Tokens (cropped to their original size) or raw ids (B, h, w) / (B, t, h, w) -> pixels in ~[-1, 1]."""
        if kwargs:
            raise InputError(f"decode takes no options here; got {sorted(kwargs)}")
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        if ids is None:
            raise InputError("these Tokens hold no ids; OmniTokenizer decodes discrete ids only")
        ids = check_ids(ids, self.config.n_codes)
        if ids.dim() not in (3, 4):
            raise InputError(
                f"ids must be laid out (B, h, w) for an image or (B, t, h, w) for a video; got shape {tuple(ids.shape)}"
            )
        if isinstance(tokens, Tokens) and tokens.modality == "image" and ids.dim() != 3:
            raise InputError(f"image Tokens must hold ids (B, h, w); got shape {tuple(ids.shape)}")
        self._check_decodable_grid(ids)
        with torch.no_grad():
            out = self.decode_ids(ids.to(self.device))
        if isinstance(tokens, Tokens) and tokens.original_size is not None:
            out = self._crop(out, tokens.original_size)
        return out

    def _check_decodable_grid(self, ids: Tensor) -> None:
        if "w" in self.config.dec_block:
            h, w = ids.shape[-2:]
            ws = self.config.window_size
            if h % ws or w % ws:
                raise InputError(
                    f"the decoder has {ws}x{ws} window blocks, so the id grid must be a multiple of {ws}; got "
                    f"{h}x{w}. Decode ids made by this tokenizer's encode (it pads inputs accordingly)."
                )

    @staticmethod
    def _crop(out: Tensor, original_size: Tensor) -> Tensor:
        sizes = torch.as_tensor(original_size).reshape(out.shape[0], -1)
        if bool((sizes != sizes[0]).any()):
            raise InputError(
                "the batch items have different original sizes; decode them one at a time (tokens.item(i))"
            )
        size = [int(s) for s in sizes[0]]
        if out.dim() == 4:
            return out[..., : size[0], : size[1]]
        return out[:, :, : size[0], : size[1], : size[2]]

    def embed(self, ids: Tensor) -> Tensor:
        """Codebook vectors (..., codebook_dim) for ids (what the decoder's first projection reads)."""
        return self.quantizer.decode(check_ids(ids, self.config.n_codes))

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training step on a canonical batch of valid size: reconstruction, ids and losses."""
        latent = self.encode_latent(x)
        quantized = self.quantizer(latent)
        reconstruction = self.decode_latent(quantized.quantized)
        losses = {"reconstruction": F.l1_loss(reconstruction, x), **quantized.losses}
        return {"reconstruction": reconstruction, "ids": quantized.ids, "losses": losses, "usage": quantized.usage}

    # -- upstream id layout ----------------------------------------------------------------------------
    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """Upstream's `VQGAN.encode` layout: (B, T', h, w) for images (T' = 1) and videos alike."""
        if tokens.ids is None:
            raise InputError("these Tokens hold no ids")
        return tokens.ids.unsqueeze(1) if tokens.modality == "image" else tokens.ids

    def tokens_from_upstream(self, ids: Any, **kwargs: Any) -> Tokens:
        """Tokens from upstream ids: (B, T', h, w), or (B, h*w) for square images; `modality=` to choose.

        With T' = 1 the ids are read as an image unless `modality="video"` is given.
        """
        unknown = set(kwargs) - {"modality"}
        if unknown:
            raise InputError(f"tokens_from_upstream takes only modality=; got {sorted(unknown)}")
        ids = torch.as_tensor(np.asarray(ids) if not isinstance(ids, Tensor) else ids)
        ids = check_ids(ids, self.config.n_codes, "upstream ids")
        modality = kwargs.get("modality")
        if ids.dim() == 2:
            side = math.isqrt(ids.shape[1])
            if side * side != ids.shape[1]:
                raise InputError(
                    f"flattened upstream ids (B, h*w) must come from a square image; got {ids.shape[1]} per item"
                )
            ids = ids.reshape(ids.shape[0], 1, side, side)
        if ids.dim() != 4:
            raise InputError(f"upstream ids are (B, T', h, w) or (B, h*w); got shape {tuple(ids.shape)}")
        if modality is None:
            modality = "image" if ids.shape[1] == 1 else "video"
        if modality == "image":
            if ids.shape[1] != 1:
                raise InputError(f"image ids have one latent frame; got {ids.shape[1]}")
            ids = ids[:, 0]
        elif modality != "video":
            raise InputError(f"modality must be 'image' or 'video'; got {modality!r}")
        tokens = self.make_tokens(ids, grid=tuple(ids.shape[1:]))
        return tokens.replace(modality=modality)


# ------------------------------------------------------------------------------------------ converter

_DROP_PREFIXES = ("image_discriminator.", "video_discriminator.", "perceptual_model.")
_DROP_KEYS = ("codebook.N", "codebook.z_avg", "codebook.codebook_usage")
_UNSUPPORTED = {
    "patch_embed": ("linear", "only linear patch embedding ('--patch_embed linear') is implemented"),
    "defer_temporal_pool": (False, "deferred temporal pooling is not used by any published checkpoint"),
    "defer_spatial_pool": (False, "deferred spatial pooling is not used by any published checkpoint"),
    "gen_upscale": (None, "decoder upscaling is not used by any published checkpoint"),
    "use_external_codebook": (False, "the external vector-quantize-pytorch codebook is not supported"),
    "use_vae": (False, "the VAE checkpoints (Gaussian latents) are not supported yet; use a VQ checkpoint"),
}


def _upstream_args(upstream_config: Any) -> dict[str, Any]:
    if upstream_config is None:
        return {}
    if not isinstance(upstream_config, dict):
        try:
            from omegaconf import OmegaConf

            upstream_config = OmegaConf.to_container(upstream_config, resolve=True)
        except Exception:  # noqa: BLE001 - anything not a mapping is reported below
            upstream_config = vars(upstream_config) if hasattr(upstream_config, "__dict__") else upstream_config
    if not isinstance(upstream_config, dict):
        raise ConfigError(f"upstream_config must be a mapping of upstream hyperparameters; got {type(upstream_config)}")
    args = dict(upstream_config.get("args") or upstream_config)
    for key in ("attention_path",):  # a fixture-level setting next to `args`
        if key in upstream_config and key not in args:
            args[key] = upstream_config[key]
    return args


def _flag(args: dict[str, Any], name: str, default: bool) -> bool:
    """A boolean flag that the published .ckpt hparams spell `casual_*` (upstream issues #13, #20)."""
    typo = name.replace("causal", "casual")
    values = {args[k] for k in (name, typo) if k in args}
    if len(values) > 1:
        raise ConfigError(f"upstream config gives both {name}={args[name]} and {typo}={args[typo]}; they must agree")
    return bool(values.pop()) if values else default


def _blocks(state: dict[str, Tensor], prefix: str) -> str:
    indices = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"\.layers\.(\d+)\.", k))}
    kinds = []
    for i in range(len(indices)):
        head = f"{prefix}.layers.{i}.1."
        kinds.append("w" if head + "relative_position_bias_table" in state else "t")
    return "".join(kinds)


def config_from_upstream(state: dict[str, Tensor], upstream_config: Any = None) -> OmniTokenizerConfig:
    """Our config: shapes read from the weights (authoritative), behaviour flags from upstream's args."""
    args = _upstream_args(upstream_config)
    for key, (allowed, why) in _UNSUPPORTED.items():
        if key in args and args[key] != allowed:
            raise UnsupportedError(f"upstream {key}={args[key]!r}: {why}")
    if "codebook.embeddings" not in state or "encoder.to_patch_emb_first_frame.2.weight" not in state:
        raise CheckpointError(
            "this does not look like an OmniTokenizer VQGAN state dict (no codebook.embeddings / encoder patch "
            "embedding); pass the contents of the Lightning checkpoint's ['state_dict']"
        )
    pre = state.get("pre_vq_conv.1.weight")
    if pre is not None and pre.shape[0] != state["codebook.embeddings"].shape[1]:
        raise UnsupportedError("a VAE checkpoint (pre_vq_conv gives mean and log-variance); use a VQ checkpoint")
    channels = int(args.get("image_channels", 3))
    dim, first = state["encoder.to_patch_emb_first_frame.2.weight"].shape
    patch = math.isqrt(first // channels)
    rest = state["encoder.to_patch_emb.2.weight"].shape[1]
    n_codes, code_dim = state["codebook.embeddings"].shape
    q_key = next((k for k in state if k.endswith(".1.q_scale")), None)
    if q_key is None:
        raise CheckpointError("no attention layer (`*.1.q_scale`) found in the OmniTokenizer state dict")
    dim_head = state[q_key].shape[0]
    heads = state[q_key.replace("q_scale", "to_q.weight")].shape[0] // dim_head
    enc_block = _blocks(state, "encoder.enc_spatial_transformer")
    dec_block = _blocks(state, "decoder.dec_spatial_transformer")
    temporal = _blocks(state, "encoder.enc_temporal_transformer")
    window = int(args.get("twod_window_size", 4))
    table = next((k for k in state if k.endswith("relative_position_bias_table")), None)
    if table is not None:
        window = (math.isqrt(state[table].shape[0]) + 1) // 2
    inner = state["encoder.enc_spatial_transformer.layers.0.3.4.weight"].shape[1]
    ff_mult = float(args.get("ff_mult", 4.0))
    if int(ff_mult * (2 / 3) * dim) != inner:
        ff_mult = inner * 1.5 / dim
    spatial_rel = any(".enc_spatial_transformer." in k and "spatial_rel_pos_bias" in k for k in state)
    spatial_pos = str(args.get("spatial_pos", "rel" if spatial_rel else "rope"))
    config = OmniTokenizerConfig(
        image_channels=channels,
        patch_size=patch,
        temporal_patch_size=rest // first,
        dim=dim,
        heads=heads,
        dim_head=dim_head,
        ff_mult=ff_mult,
        enc_block=enc_block,
        dec_block=dec_block,
        temporal_depth=len(temporal),
        window_size=window,
        spatial_pos=spatial_pos,
        causal_temporal=_flag(args, "causal_in_temporal_transformer", True),
        causal_peg=_flag(args, "causal_in_peg", True),
        attention_path=str(args.get("attention_path", "sdpa")),
        n_codes=n_codes,
        codebook_dim=code_dim,
        l2_code=bool(args.get("l2_code", True)),
        resolution=int(args.get("resolution", 256)),
        sequence_length=int(args.get("sequence_length", 17)),
    )
    _check_args_agree(args, config)
    return config


def _check_args_agree(args: dict[str, Any], config: OmniTokenizerConfig) -> None:
    checks = {
        "patch_size": config.patch_size, "temporal_patch_size": config.temporal_patch_size,
        "embedding_dim": config.dim, "n_codes": config.n_codes, "codebook_dim": config.codebook_dim,
        "enc_block": config.enc_block, "dec_block": config.dec_block, "temporal_depth": config.temporal_depth,
        "heads": config.heads, "dim_head": config.dim_head,
    }
    if "w" in config.enc_block + config.dec_block:
        checks["twod_window_size"] = config.window_size
    wrong = [f"{k}={args[k]!r} (weights say {v!r})" for k, v in checks.items() if k in args and args[k] != v]
    if wrong:
        raise CheckpointError(
            "the upstream config does not describe these weights: " + "; ".join(wrong)
            + ". Check that the config belongs to this checkpoint file."
        )


def _rename(key: str) -> str:
    key = key.replace("encoder.to_patch_emb_first_frame.1.", "encoder.first_frame_embed.norm_in.")
    key = key.replace("encoder.to_patch_emb_first_frame.2.", "encoder.first_frame_embed.proj.")
    key = key.replace("encoder.to_patch_emb_first_frame.3.", "encoder.first_frame_embed.norm_out.")
    key = key.replace("encoder.to_patch_emb.1.", "encoder.frames_embed.norm_in.")
    key = key.replace("encoder.to_patch_emb.2.", "encoder.frames_embed.proj.")
    key = key.replace("encoder.to_patch_emb.3.", "encoder.frames_embed.norm_out.")
    key = key.replace("decoder.to_pixels_first_frame.0.", "decoder.first_frame_out.")
    key = key.replace("decoder.to_pixels.0.", "decoder.frames_out.")
    for old, new in (("enc_spatial_transformer", "spatial"), ("enc_temporal_transformer", "temporal"),
                     ("dec_spatial_transformer", "spatial"), ("dec_temporal_transformer", "temporal")):
        key = key.replace(f".{old}.", f".{new}.")
    key = re.sub(r"\.layers\.(\d+)\.0\.dsconv\.", r".blocks.\1.peg.conv.", key)
    key = re.sub(r"\.layers\.(\d+)\.1\.spatial_rel_pos_bias\.", r".blocks.\1.attn.position_bias.", key)
    key = re.sub(r"\.layers\.(\d+)\.1\.", r".blocks.\1.attn.", key)
    key = re.sub(r"\.layers\.(\d+)\.3\.0\.", r".blocks.\1.ff.norm.", key)
    key = re.sub(r"\.layers\.(\d+)\.3\.1\.", r".blocks.\1.ff.proj_in.", key)
    key = re.sub(r"\.layers\.(\d+)\.3\.4\.", r".blocks.\1.ff.proj_out.", key)
    key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
    key = key.replace("codebook.embeddings", "quantizer.codebook")
    key = key.replace("pre_vq_conv.1.", "quant_proj.").replace("post_vq_conv.1.", "post_quant_proj.")
    return key


def _unused(key: str, config: OmniTokenizerConfig) -> bool:
    """Upstream tensors that never take part in inference with this config."""
    if key.startswith(_DROP_PREFIXES) or key in _DROP_KEYS or ".context_norm." in key:
        return True
    if "spatial_rel_pos_bias" in key:
        spatial = "_spatial_transformer." in key
        return not (spatial and config.spatial_pos == "rel" and config.attention_path == "legacy")
    return False


def convert_omnitokenizer(state_dict: dict[str, Any], upstream_config: Any = None, **_: Any) -> OmniTokenizer:
    """Build an `OmniTokenizer` from upstream VQGAN weights (a Lightning `["state_dict"]`) and its args.

    Discriminators, LPIPS, codebook EMA buffers, unused position-bias MLPs and cross-attention norms
    are dropped; window relative-position indices are checked against ours; every other key must map.
    """
    state = state_dict
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = dict(state)
    config = config_from_upstream(state, upstream_config)
    ours: dict[str, Tensor] = {}
    for key in list(state):
        value = state.pop(key)
        if not isinstance(value, Tensor) or _unused(key, config):
            continue
        if key.endswith("relative_position_index"):
            expected = window_relative_index(config.window_size)
            if value.shape != expected.shape or not torch.equal(value.long().cpu(), expected):
                size = config.window_size
                raise CheckpointError(f"{key}: not the Swin relative index of a {size}x{size} window")
            continue
        ours[_rename(key)] = value.float() if value.is_floating_point() else value
    with torch.device("meta"):
        model = OmniTokenizer(config)
    load_state_strict(model, ours, "OmniTokenizer upstream checkpoint", assign=True)
    for module in model.modules():  # non-persistent buffers stay on meta after an assign-load
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.is_meta:
                if name != "initialized":
                    raise CheckpointError(f"buffer {name} of {type(module).__name__} was not restored")
                setattr(module, name, torch.ones((), dtype=torch.bool))
    model.eval()
    return model


VARIANTS = (
    "omnitokenizer-imagenet-k600",
    "omnitokenizer-imagenet-ucf",
    "omnitokenizer-imagenet-mit",
    "omnitokenizer-imagenet-sthv2",
    "omnitokenizer-imagenet-only",
    "omnitokenizer-celebahq",
    "omnitokenizer-ffhq",
    "omnitokenizer-celebahq-ucf",
    "omnitokenizer-celebahq-k600",
    "omnitokenizer-ffhq-ucf",
    "omnitokenizer-ffhq-k600",
    "omnitokenizer-tiny",
)

register_tokenizer(OmniTokenizer, variants=VARIANTS)
register_converter("omnitokenizer", convert_omnitokenizer)

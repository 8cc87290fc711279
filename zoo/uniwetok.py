"""UniWeTok: an image tokenizer with a binary codebook of 2^128 codes (arXiv 2602.14178).

A 256x256 image becomes 8x8 tokens of 128 bits. The encoder is a conv stack (32x downsampling) followed
by a few transformer blocks with register tokens and 2-D rotary embeddings; its output passes through
SigLu (2*sigmoid(x) - 1) and each channel is quantised to its sign. The decoder is a GAN decoder that
appends Gaussian noise channels to the bits, so decoding is stochastic: here the noise is an argument.

Token layout. A token's code is its 128 bits. For language models the bits are read as integer ids
in groups of `group_bits` consecutive channels (`zoo.layers.quantize.GroupedBinary`): ids
`(B, h, w, 128 // group_bits)`, one vocabulary of `2**group_bits` per group. `to_bits` / `from_bits`
convert losslessly both ways; `tokens_to_upstream` gives upstream's `(B, 128, h, w)` float +-1 layout.

Upstream: github.com/shallowdream204/BitDance, `modeling/vision_encoder/autoencoder_uni.py` (Apache-2.0).
BitDance's own binary autoencoders (`autoencoder.py`, the ae_d16c32 / ae_d32c128 / ae_d32c256 files) are
another architecture (no attention or registers, no SigLu, ResBlocks that change width, encoder mid
blocks, a decoder without noise), so this family does not load them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.checkpoint import load_state_strict
from registry.errors import CheckpointError, ConfigError, InputError
from registry.registry import register_converter, register_tokenizer
from zoo.layers.attention import attention
from zoo.layers.quantize import GroupedBinary, bits_to_ids, ids_to_bits
from zoo.layers.rotary import apply_rotary, rope_axial
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, __version__, is_exporting
from zoo.tokens import Tokens


@dataclass
class UniWeTokConfig:
    """Hyperparameters; defaults are the 32x / 128-bit shape (BitDance `ae_d32c128` widths)."""

    in_channels: int = 3
    out_channels: int = 3
    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4, 8])
    num_res_blocks: int = 4
    z_channels: int = 128
    attn_blocks: int = 2
    num_heads: int = 16
    register_tokens: int = 4
    mlp_ratio: float = 4.0
    ffn_multiple: int = 256
    rope_base: float = 10000.0
    # Rotary positions are rescaled so any token grid spans the centres of this training grid (8x8 at 256 px).
    rope_grid: float = 8.0
    norm_groups: int = 32
    norm_eps: float = 1e-6
    resolution: int = 256
    group_bits: int = 8
    bit_order: str = "lsb_first"
    attention_backend: str | None = None


# -- building blocks ---------------------------------------------------------------------------------


def _group_norm(config: UniWeTokConfig, channels: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(config.norm_groups, channels, eps=config.norm_eps, affine=affine)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GN, swish, conv3x3) twice; a 1x1 projection when widths differ."""

    def __init__(self, config: UniWeTokConfig, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(config, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _group_norm(config, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.shortcut(x) if self.shortcut is not None else x)


class DepthToSpaceUpsample(nn.Module):
    """conv3x3 to 4x channels, then DCR depth-to-space: channel (i*2 + j)*C + c lands at (c, 2y+i, 2x+j).

    DCR order is not `pixel_shuffle`'s (which reads channel c*4 + i*2 + j).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        b, c4, h, w = y.shape
        c = c4 // 4
        y = y.reshape(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(b, c, h * 2, w * 2)


class StyleNorm(nn.Module):
    """GroupNorm without affine, then a scale and shift predicted from per-image statistics of the bits.

    scale = Linear(sqrt(var(bits) + eps)), shift = Linear(mean(bits)); the variance over the h*w tokens is
    torch's unbiased one (N - 1), as upstream computes it.
    """

    def __init__(self, config: UniWeTokConfig, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(config, channels, affine=False)
        self.scale = nn.Linear(config.z_channels, channels)
        self.shift = nn.Linear(config.z_channels, channels)
        self.eps = config.norm_eps

    def forward(self, x: Tensor, bits: Tensor) -> Tensor:
        flat = bits.flatten(2)
        scale = self.scale(torch.sqrt(flat.var(dim=-1) + self.eps))
        shift = self.shift(flat.mean(dim=-1))
        return self.norm(x) * scale[:, :, None, None] + shift[:, :, None, None]


class SelfAttention(nn.Module):
    """Non-causal multi-head self-attention with rotary q/k; fused qkv projection (q, k, v order)."""

    def __init__(self, dim: int, heads: int, backend: str | None) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q = apply_rotary(q, cos, sin, interleaved=True)
        k = apply_rotary(k, cos, sin, interleaved=True)
        out = attention(q, k, v, backend=self.backend, scale=self.head_dim**-0.5)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))


class SwiGLU(nn.Module):
    """silu(gate) * up, with gate and up from one projection (first and second half)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, config: UniWeTokConfig, dim: int) -> None:
        super().__init__()
        hidden = int(2 * config.mlp_ratio * dim / 3)
        hidden = -(-hidden // config.ffn_multiple) * config.ffn_multiple
        self.attn_norm = nn.RMSNorm(dim, eps=config.norm_eps)
        self.attn = SelfAttention(dim, config.num_heads, config.attention_backend)
        self.ffn_norm = nn.RMSNorm(dim, eps=config.norm_eps)
        self.ffn = SwiGLU(dim, hidden)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


def grid_centres(n: int, span: float, like: Tensor, placement: str) -> Tensor:
    """Rotary positions of n tokens along one axis, rescaled to the training grid's centre range.

    "encoder": i * (span - 1) / (n - 1) + 0.5 (undefined for n = 1: callers keep n >= 2);
    "decoder": (i + 0.5) * (span - 0.5) / (n - 0.5). Both give 0.5 .. span - 0.5 ends; they differ
    inside unless n equals the training grid. Computed in upstream's operation order.
    """
    idx = torch.arange(n, device=like.device, dtype=torch.float32)
    if placement == "encoder":
        return idx * ((span - 1.0) / idx[-1]) + 0.5
    idx = idx + 0.5
    return idx * ((span - 0.5) / idx[-1])


def rope_tables(
    h: int, w: int, head_dim: int, registers: int, base: float, span: float, placement: str, like: Tensor
) -> tuple[Tensor, Tensor]:
    """cos, sin (registers + h*w, head_dim // 2) for rotating adjacent pairs of each head.

    Axial split layout: the first half of the pairs turns with the column (x) position, the second half
    with the row (y); angle = (position + 1) * frequency, and 0 for the register tokens.
    """
    ys = grid_centres(h, span, like, placement)
    xs = grid_centres(w, span, like, placement)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    pos = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1) + 1.0
    pos = torch.cat([pos.new_zeros(registers, 2), pos], dim=0)
    return rope_axial(pos, head_dim, theta=base, layout="split", dtype=like.dtype)


class TokenMixer(nn.Module):
    """Transformer blocks over the flattened feature map (row-major), with learned register tokens prepended."""

    def __init__(self, config: UniWeTokConfig, dim: int, placement: str) -> None:
        super().__init__()
        self.config = config
        self.placement = placement
        self.registers = nn.Parameter(torch.zeros(config.register_tokens, dim))
        self.blocks = nn.ModuleList(TransformerBlock(config, dim) for _ in range(config.attn_blocks))

    def forward(self, x: Tensor) -> Tensor:
        if len(self.blocks) == 0:
            return x
        b, c, h, w = x.shape
        cfg = self.config
        tokens = x.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.registers.to(x.dtype).expand(b, -1, -1), tokens], dim=1)
        cos, sin = rope_tables(h, w, c // cfg.num_heads, cfg.register_tokens, cfg.rope_base, cfg.rope_grid,
                               self.placement, x)
        for block in self.blocks:
            tokens = block(tokens, cos, sin)
        return tokens[:, cfg.register_tokens:].transpose(1, 2).reshape(b, c, h, w)


def _widths(config: UniWeTokConfig) -> list[int]:
    return [config.channels * m for m in config.channel_mult]


class EncoderLevel(nn.Module):
    def __init__(self, config: UniWeTokConfig, width: int, next_width: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(config, width, width) for _ in range(config.num_res_blocks))
        self.downsample = nn.Conv2d(width, next_width, 3, stride=2, padding=1) if next_width else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class Encoder(nn.Module):
    """conv_in, conv levels (width changes in the stride-2 convs), token mixer, GN, 1x1 conv: SigLu logits."""

    def __init__(self, config: UniWeTokConfig) -> None:
        super().__init__()
        widths = _widths(config)
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1, bias=False)
        self.levels = nn.ModuleList(
            EncoderLevel(config, w, widths[i + 1] if i + 1 < len(widths) else None) for i, w in enumerate(widths)
        )
        self.mixer = TokenMixer(config, widths[-1], "encoder")
        self.norm_out = _group_norm(config, widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], config.z_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for level in self.levels:
            x = level(x)
        x = self.mixer(x)
        return self.conv_out(self.norm_out(x))


class DecoderLevel(nn.Module):
    def __init__(self, config: UniWeTokConfig, in_width: int, width: int, upsample: bool) -> None:
        super().__init__()
        self.style_norm = StyleNorm(config, in_width)
        self.blocks = nn.ModuleList(
            ResBlock(config, in_width if i == 0 else width, width) for i in range(config.num_res_blocks)
        )
        self.upsample = DepthToSpaceUpsample(width) if upsample else None

    def forward(self, x: Tensor, bits: Tensor) -> Tensor:
        x = self.style_norm(x, bits)
        for block in self.blocks:
            x = block(x)
        return self.upsample(x) if self.upsample is not None else x


class Decoder(nn.Module):
    """[bits, noise] -> conv_in, token mixer, mid ResBlocks, levels coarse to fine (bit-styled GN first)."""

    def __init__(self, config: UniWeTokConfig) -> None:
        super().__init__()
        widths = _widths(config)
        top = widths[-1]
        self.conv_in = nn.Conv2d(2 * config.z_channels, top, 3, padding=1)
        self.mixer = TokenMixer(config, top, "decoder")
        self.mid = nn.ModuleList(ResBlock(config, top, top) for _ in range(config.num_res_blocks))
        # levels[i] runs at the resolution of encoder level i; they run from the last to the first.
        in_widths = [widths[i + 1] if i + 1 < len(widths) else top for i in range(len(widths))]
        self.levels = nn.ModuleList(
            DecoderLevel(config, in_widths[i], widths[i], upsample=i > 0) for i in range(len(widths))
        )
        self.norm_out = _group_norm(config, widths[0])
        self.conv_out = nn.Conv2d(widths[0], config.out_channels, 3, padding=1)

    def forward(self, bits: Tensor, noise: Tensor) -> Tensor:
        x = self.conv_in(torch.cat([bits, noise], dim=1))
        x = self.mixer(x)
        for block in self.mid:
            x = block(x)
        for level in reversed(self.levels):
            x = level(x, bits)
        return self.conv_out(F.silu(self.norm_out(x)))


def siglu(x: Tensor) -> Tensor:
    """2*sigmoid(x) - 1: bounds the latent to (-1, 1) before the sign."""
    return 2 * torch.sigmoid(x) - 1


# -- the tokenizer -----------------------------------------------------------------------------------


def _check_config(config: UniWeTokConfig) -> None:
    widths = _widths(config)
    bad = [w for w in widths if w % config.norm_groups]
    if not widths or bad:
        raise ConfigError(
            f"uniwetok: every level width (channels * channel_mult = {widths}) must be a positive multiple of "
            f"norm_groups ({config.norm_groups}); change `channels` or `channel_mult`."
        )
    top = widths[-1]
    if top % config.num_heads or (top // config.num_heads) % 4:
        raise ConfigError(
            f"uniwetok: the attention width {top} must split into num_heads ({config.num_heads}) heads whose size "
            "is a multiple of 4 (2-D rotary turns half the pairs per axis); change num_heads."
        )
    if config.z_channels % config.group_bits or not 1 <= config.group_bits <= 62:
        raise ConfigError(
            f"uniwetok: group_bits ({config.group_bits}) must divide z_channels ({config.z_channels}) and lie in "
            "[1, 62] (ids are int64); 8 or 16 are the usual choices."
        )
    if config.bit_order not in ("lsb_first", "msb_first"):
        raise ConfigError(f"uniwetok: bit_order must be 'lsb_first' or 'msb_first'; got {config.bit_order!r}.")


class UniWeTokTokenizer(Tokenizer):
    """UniWeTok image tokenizer: `encode` -> grouped bit ids, `decode(tokens, noise=, generator=)` -> image."""

    family = "uniwetok"
    config_class = UniWeTokConfig
    modality = "image"
    parity_cases = ("uniwetok/a",)

    def __init__(self, config: UniWeTokConfig) -> None:
        super().__init__(config)
        _check_config(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantizer = GroupedBinary(config.z_channels, config.group_bits, config.bit_order)  # type: ignore[arg-type]

    # -- facts -----------------------------------------------------------------------------------
    @property
    def downsample(self) -> int:
        return 2 ** (len(self.config.channel_mult) - 1)

    @property
    def spec(self) -> TokenSpec:
        cfg = self.config
        side = cfg.resolution // self.downsample
        return TokenSpec(
            modality="image",
            kind="binary",
            codebook_sizes=self.quantizer.codebook_sizes,
            bits_per_token=cfg.z_channels,
            tokens_per_item=side * side,
            downsample=(self.downsample, self.downsample),
            channels=cfg.in_channels,
            input_size=(cfg.resolution, cfg.resolution),
            stochastic_decode=True,
            notes=(
                f"each token is {cfg.z_channels} bits (codebook 2^{cfg.z_channels}); ids group {cfg.group_bits} "
                f"bits ({cfg.bit_order}); decode appends Gaussian noise: pass noise= or generator= to reproduce"
            ),
        )

    # -- tensor paths (exportable) ---------------------------------------------------------------
    def encode_latent(self, x: Tensor) -> Tensor:
        """Image (B, C, H, W) with H, W multiples of the stride -> SigLu latent (B, h, w, z) in (-1, 1)."""
        if not is_exporting():
            self._check_grid(x.shape[-2] // self.downsample, x.shape[-1] // self.downsample, "encode")
        return siglu(self.encoder(x)).permute(0, 2, 3, 1)

    def encode_bits(self, x: Tensor) -> Tensor:
        """Image -> bits (B, h, w, z) as float +-1 (upstream's rule: +1 where the latent is > 0)."""
        return self.quantizer.decode_bits(self.quantizer.encode_bits(self.encode_latent(x))).to(x.dtype)

    def encode_ids(self, x: Tensor) -> Tensor:
        """Image -> grouped ids (B, h, w, z // group_bits) int64."""
        return self.quantizer.encode(self.encode_latent(x))

    def decode_bits(
        self, bits: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Bits (B, h, w, z) as float +-1 and noise (B, h, w, z) -> image (B, C, h*s, w*s), untrimmed."""
        # Contiguous (B, z, h, w) both ways, so the conv kernels (and results) do not depend on the input's strides.
        bits_cf = bits.to(self.dtype).permute(0, 3, 1, 2).contiguous()
        if noise is None:
            noise_cf = self._draw_noise(bits_cf, generator)
        else:
            noise_cf = noise.to(bits_cf.dtype).permute(0, 3, 1, 2).contiguous()
        return self.decoder(bits_cf, noise_cf)

    def decode_ids(self, ids: Tensor, noise: Tensor | None = None) -> Tensor:
        """Grouped ids (B, h, w, G) (+ noise (B, h, w, z)) -> image; noise is drawn when not given."""
        return self.decode_bits(self.quantizer.decode(ids), noise)

    def _draw_noise(self, bits_cf: Tensor, generator: torch.Generator | None) -> Tensor:
        # Drawn in upstream's (B, z, h, w) layout, so a seeded generator gives upstream's draw on the same device.
        if generator is None:
            return torch.randn_like(bits_cf)  # exports (RandomNormalLike); randn with a shape does not
        return torch.randn(bits_cf.shape, generator=generator, device=bits_cf.device, dtype=bits_cf.dtype)

    def encoder_module(self, outputs: str = "ids") -> nn.Module:
        """Export wrapper: image -> ids ("ids"), -> +-1 bits ("bits"), or -> (ids, bits) ("both")."""
        if outputs not in ("ids", "bits", "both"):
            raise ConfigError(f"encoder_module outputs must be 'ids', 'bits' or 'both'; got {outputs!r}")
        return _EncodeGraph(self, outputs)

    def decoder_module(self, inputs: str = "ids") -> nn.Module:
        """Export wrapper: (ids, noise) -> image ("ids") or (bits, noise) -> image ("bits")."""
        if inputs not in ("ids", "bits"):
            raise ConfigError(f"decoder_module inputs must be 'ids' or 'bits'; got {inputs!r}")
        return _DecodeGraph(self, inputs)

    # -- Tokens API ------------------------------------------------------------------------------
    def encode(self, x: Any, **kwargs: Any) -> Tokens:
        """Image(s) (B, 3, H, W) in [-1, 1] -> Tokens with ids (B, h, w, G).

        Sides are zero-padded at the bottom/right to a multiple of the stride (and to at least two
        tokens, which the encoder's positions need); `original_size` records (H, W) for `decode`.
        Inference only (no autograd graph); `forward` is the training path.
        """
        if kwargs:
            raise InputError(f"uniwetok encode takes no options; got {sorted(kwargs)}")
        x = self.prepare(x)
        height, width = x.shape[-2:]
        x = self._pad(x)
        with torch.no_grad():
            ids = self.encode_ids(x)
        size = torch.tensor([[height, width]], dtype=torch.long).expand(x.shape[0], 2).clone()
        return self._tokens(ids, size)

    def decode(
        self,
        tokens: Tokens | Tensor,
        noise: Any = None,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Tokens (or ids (B, h, w, G)) -> images (B, 3, H, W), cropped to the encoded size.

        `noise` (B, h, w, z) makes the decode reproducible (`noise_from_upstream` converts upstream's
        (B, z, h, w) draw); otherwise it is drawn from `generator` (or the global RNG).
        """
        if kwargs:
            raise InputError(f"uniwetok decode takes noise= and generator= only; got {sorted(kwargs)}")
        bits = self.to_bits(tokens)
        b, h, w, z = bits.shape
        self._check_grid(h, w, "decode")
        if noise is not None:
            noise = self._as_noise(noise, (b, h, w, z))
        with torch.no_grad():
            image = self.decode_bits(bits, noise, generator)
        size = tokens.original_size if isinstance(tokens, Tokens) else None
        if size is not None:
            height, width = (int(v) for v in torch.as_tensor(size).reshape(-1, 2)[0])
            image = image[..., :height, :width]
        return image

    def embed(self, ids: Tokens | Tensor) -> Tensor:
        """Code vectors: the +-1 bits (B, h, w, z) of each token (what the decoder reads)."""
        return self.to_bits(ids)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training step: straight-through sign, reconstruction with fresh noise, L1 loss + quantizer losses."""
        x = self.prepare(x)
        latent = self.encode_latent(self._pad(x))
        out = self.quantizer(latent)
        recon = self.decoder(out.quantized.permute(0, 3, 1, 2), torch.randn_like(out.quantized.permute(0, 3, 1, 2)))
        recon = recon[..., : x.shape[-2], : x.shape[-1]]
        losses = {"reconstruction_l1": (recon - x).abs().mean(), **out.losses}
        return {
            "reconstruction": recon,
            "ids": out.ids,
            "latent": latent,
            "losses": losses,
            "loss": sum(losses.values()),
        }

    # -- bits <-> ids <-> upstream -----------------------------------------------------------------
    def to_bits(self, tokens: Tokens | Tensor) -> Tensor:
        """Tokens or grouped ids (B, h, w, G) -> bits (B, h, w, z) as float +-1 (lossless)."""
        ids, group_bits = self._ids_and_group_bits(tokens)
        bits = ids_to_bits(ids, group_bits, self.config.bit_order)  # type: ignore[arg-type]
        return torch.where(bits, 1.0, -1.0).to(self.dtype)

    def from_bits(self, bits: Any, original_size: Any = None, group_bits: int | None = None) -> Tokens:
        """Bits (B, h, w, z) -> Tokens with ids grouped by `group_bits` (default: the config's).

        Accepted bit values: +-1 (upstream's convention), 0/1, or bool; 1/True is the positive bit.
        """
        k = self.config.group_bits if group_bits is None else int(group_bits)
        z = self.config.z_channels
        if z % k or not 1 <= k <= 62:
            raise InputError(f"group_bits must divide the {z} bits and lie in [1, 62]; got {k}")
        positive = self._as_bits(bits, layout="(B, h, w, bits)", channel_axis=-1)
        ids = bits_to_ids(positive, k, self.config.bit_order)  # type: ignore[arg-type]
        size = None if original_size is None else torch.as_tensor(original_size, dtype=torch.long).reshape(-1, 2)
        return self._tokens(ids, size, group_bits=k)

    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """Upstream's layout: (B, z, h, w) float32 with values exactly -1.0 / +1.0 (channel c = bit c)."""
        return self.to_bits(tokens).float().permute(0, 3, 1, 2).contiguous()

    def tokens_from_upstream(self, ids: Any, original_size: Any = None, **kwargs: Any) -> Tokens:
        """Tokens from upstream's `VQModel.encode` output (B, z, h, w) (or (z, h, w)) of +-1 (or 0/1, bool)."""
        if kwargs:
            raise InputError(f"tokens_from_upstream takes original_size= only; got {sorted(kwargs)}")
        positive = self._as_bits(ids, layout="(B, bits, h, w)", channel_axis=1)
        return self.from_bits(positive.permute(0, 2, 3, 1), original_size=original_size)

    def noise_from_upstream(self, array: Any) -> Tensor:
        """Upstream's decoder noise (B, z, h, w) (what `randn_like(bits)` drew) -> our (B, h, w, z) layout."""
        noise = _as_float_tensor(array, "noise")
        if noise.dim() == 3:
            noise = noise.unsqueeze(0)
        z = self.config.z_channels
        if noise.dim() != 4 or noise.shape[1] != z:
            raise InputError(
                f"upstream decoder noise must be laid out (B, {z}, h, w) like the bits; got {tuple(noise.shape)}"
            )
        return noise.permute(0, 2, 3, 1).contiguous()

    # -- helpers ---------------------------------------------------------------------------------
    def _tokens(self, ids: Tensor, size: Tensor | None, group_bits: int | None = None) -> Tokens:
        k = self.config.group_bits if group_bits is None else group_bits
        groups = self.config.z_channels // k
        return Tokens(
            ids=ids,
            modality="image",
            codebook_sizes=(2**k,) * groups,
            grid=(int(ids.shape[1]), int(ids.shape[2])),
            original_size=size,
            meta={"group_bits": k, "bit_order": self.config.bit_order, "bits_per_token": self.config.z_channels},
            producer=self.name,
            version=__version__,
        )

    def _pad(self, x: Tensor) -> Tensor:
        s = self.downsample
        height, width = x.shape[-2:]
        target_h = max(-(-height // s), 2) * s
        target_w = max(-(-width // s), 2) * s
        if (target_h, target_w) == (height, width):
            return x
        return F.pad(x, (0, target_w - width, 0, target_h - height))

    def _check_grid(self, h: int, w: int, what: str) -> None:
        if what == "encode" and (h < 2 or w < 2):
            raise InputError(
                f"uniwetok encoder input must give at least 2x2 tokens (sides >= {2 * self.downsample} px, "
                f"multiples of {self.downsample}); got a {h}x{w} token grid. Use encode(), which pads, or pad first."
            )
        if what == "decode" and h * w < 2:
            raise InputError(
                f"uniwetok decodes grids of at least 2 tokens (its style norm takes a variance over tokens); "
                f"got a {h}x{w} grid"
            )

    def _ids_and_group_bits(self, tokens: Tokens | Tensor) -> tuple[Tensor, int]:
        z = self.config.z_channels
        if isinstance(tokens, Tokens):
            if tokens.ids is None:
                raise InputError("these Tokens hold no ids; uniwetok decodes ids (or bits via from_bits)")
            sizes = set(int(s) for s in tokens.codebook_sizes)
            groups = len(tokens.codebook_sizes)
            if len(sizes) != 1 or groups == 0 or z % groups:
                raise InputError(
                    f"Tokens with codebook sizes {list(tokens.codebook_sizes)[:4]}... were not made by uniwetok "
                    f"(expected G groups of 2^k ids with G*k = {z})"
                )
            k = z // groups
            if 2**k != sizes.pop():
                raise InputError(
                    f"Tokens have {groups} groups of {list(tokens.codebook_sizes)[0]} ids; uniwetok needs 2^k ids "
                    f"per group with G*k = {z} bits"
                )
            ids = tokens.ids
        else:
            ids, k = tokens, self.config.group_bits
        ids = torch.as_tensor(ids)
        groups = z // k
        if ids.dim() == 3:
            ids = ids.unsqueeze(0)
        if ids.dim() != 4 or ids.shape[-1] != groups:
            raise InputError(
                f"uniwetok ids must be laid out (B, h, w, {groups}) ({groups} groups of {k} bits); got shape "
                f"{tuple(ids.shape)}. For bit arrays use from_bits(); for upstream's (B, {z}, h, w) +-1 arrays use "
                "tokens_from_upstream()."
            )
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise InputError(f"uniwetok ids must be integers (int64), got {ids.dtype}; bits go through from_bits()")
        if ids.numel() == 0:
            raise InputError(f"uniwetok ids are empty (shape {tuple(ids.shape)}); nothing to decode")
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= 2**k:
            raise InputError(
                f"uniwetok ids hold {k} bits per group, so they must lie in [0, {2**k - 1}]; got values in "
                f"[{low}, {high}]. Were they made with another group size (group_bits)?"
            )
        return ids.long().to(self.device), k

    def _as_bits(self, bits: Any, layout: str, channel_axis: int) -> Tensor:
        """A bool tensor (True = positive bit) from +-1, 0/1 or bool values, batched, width checked."""
        z = self.config.z_channels
        t = _as_tensor(bits, "bits")
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4:
            raise InputError(f"uniwetok bits must be laid out {layout}; got shape {tuple(t.shape)}")
        if t.shape[channel_axis] != z:
            raise InputError(
                f"uniwetok tokens are {z} bits wide, laid out {layout}; got {t.shape[channel_axis]} bits on that "
                f"axis (shape {tuple(t.shape)}). Bits from another tokenizer or a transposed array?"
            )
        if t.numel() == 0:
            raise InputError(f"uniwetok bits are empty (shape {tuple(t.shape)}); nothing to convert")
        if t.dtype == torch.bool:
            return t.to(self.device)
        if t.is_complex():
            raise InputError(f"uniwetok bits must be real +-1, 0/1 or bool values; got {t.dtype}")
        values = set(torch.unique(t).tolist())
        if not values <= {-1.0, 0.0, 1.0} or {-1.0, 0.0} <= values:
            odd = sorted(v for v in values if v not in (-1.0, 0.0, 1.0))[:5]
            found = f"other values, e.g. {odd}" if odd else "both -1 and 0"
            raise InputError(
                "uniwetok bits must be +-1 (upstream's convention) or 0/1 (or bool), one convention per array; "
                f"got {found}. Quantise latents first (e.g. torch.where(z > 0, 1, -1))."
            )
        return (t > 0).to(self.device)

    def _as_noise(self, noise: Any, shape: tuple[int, int, int, int]) -> Tensor:
        t = _as_float_tensor(noise, "noise")
        if tuple(t.shape) != shape:
            raise InputError(
                f"decoder noise must be laid out (B, h, w, z) = {shape} like the bits; got {tuple(t.shape)}. "
                "Convert upstream's (B, z, h, w) noise with noise_from_upstream()."
            )
        if not bool(torch.isfinite(t).all()):
            raise InputError("decoder noise contains NaN or Inf values")
        return t.to(device=self.device, dtype=self.dtype)


def _as_tensor(x: Any, what: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InputError(f"{what} must be a torch.Tensor or numpy array; got {type(x).__name__}")
    return x


def _as_float_tensor(x: Any, what: str) -> Tensor:
    t = _as_tensor(x, what)
    if not t.is_floating_point():
        raise InputError(f"{what} must be a float tensor (standard normal draws); got {t.dtype}")
    return t


class _EncodeGraph(nn.Module):
    def __init__(self, tokenizer: UniWeTokTokenizer, outputs: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.outputs = outputs
        self.training = tokenizer.training

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        tok = self.tokenizer
        latent = tok.encode_latent(x)
        positive = tok.quantizer.encode_bits(latent)
        bits = torch.where(positive, 1.0, -1.0).to(x.dtype)
        if self.outputs == "bits":
            return bits
        ids = bits_to_ids(positive, tok.config.group_bits, tok.config.bit_order)  # type: ignore[arg-type]
        return ids if self.outputs == "ids" else (ids, bits)


class _DecodeGraph(nn.Module):
    def __init__(self, tokenizer: UniWeTokTokenizer, inputs: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.inputs = inputs
        self.training = tokenizer.training

    def forward(self, codes: Tensor, noise: Tensor | None = None) -> Tensor:
        if self.inputs == "ids":
            return self.tokenizer.decode_ids(codes, noise)
        return self.tokenizer.decode_bits(codes, noise)


# -- converter ---------------------------------------------------------------------------------------

# (upstream prefix, our prefix); {a}/{b} are indices. First match wins, so longer patterns come first.
_RENAMES: tuple[tuple[str, str], ...] = (
    ("encoder.down.{a}.block.{b}.nin_shortcut.", "encoder.levels.{a}.blocks.{b}.shortcut."),
    ("encoder.down.{a}.block.{b}.", "encoder.levels.{a}.blocks.{b}."),
    ("encoder.down.{a}.downsample.", "encoder.levels.{a}.downsample."),
    ("decoder.up.{a}.block.{b}.nin_shortcut.", "decoder.levels.{a}.blocks.{b}.shortcut."),
    ("decoder.up.{a}.block.{b}.", "decoder.levels.{a}.blocks.{b}."),
    ("decoder.up.{a}.upsample.conv1.", "decoder.levels.{a}.upsample.conv."),
    ("decoder.adaptive.{a}.gamma.", "decoder.levels.{a}.style_norm.scale."),
    ("decoder.adaptive.{a}.beta.", "decoder.levels.{a}.style_norm.shift."),
    ("decoder.mid_block.{a}.nin_shortcut.", "decoder.mid.{a}.shortcut."),
    ("decoder.mid_block.{a}.", "decoder.mid.{a}."),
    ("{side}.register_token.weight", "{side}.mixer.registers"),
    ("{side}.mid_attn_blocks.{a}.attention_norm.", "{side}.mixer.blocks.{a}.attn_norm."),
    ("{side}.mid_attn_blocks.{a}.attention.wqkv.", "{side}.mixer.blocks.{a}.attn.qkv."),
    ("{side}.mid_attn_blocks.{a}.attention.wo.", "{side}.mixer.blocks.{a}.attn.proj."),
    ("{side}.mid_attn_blocks.{a}.ffn_norm.", "{side}.mixer.blocks.{a}.ffn_norm."),
    ("{side}.mid_attn_blocks.{a}.feed_forward.w1.", "{side}.mixer.blocks.{a}.ffn.gate_up."),
    ("{side}.mid_attn_blocks.{a}.feed_forward.w2.", "{side}.mixer.blocks.{a}.ffn.down."),
)
_SLOTS = {"a": r"(?P<a>\d+)", "b": r"(?P<b>\d+)", "side": r"(?P<side>encoder|decoder)"}


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(_SLOTS[p] if i % 2 else re.escape(p) for i, p in enumerate(parts)))


_FORWARD = tuple((_pattern(src), dst) for src, dst in _RENAMES)
_BACKWARD = tuple((_pattern(dst), src) for src, dst in _RENAMES)


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict()) + key[match.end():]
    return key


def upstream_key(ours: str) -> str:
    """Our state-dict key -> upstream `VQModel` key (e.g. to hand our weights to upstream code)."""
    return _rename(ours, _BACKWARD)


def our_key(upstream: str) -> str:
    """Upstream `VQModel` key -> ours."""
    return _rename(upstream, _FORWARD)


def upstream_state_dict(tok: UniWeTokTokenizer) -> dict[str, Tensor]:
    """Our weights under upstream's key names (loadable by upstream `VQModel.load_state_dict`)."""
    return {upstream_key(k): v for k, v in tok.state_dict().items()}


_DDCONFIG_KEYS = {
    "ch": "channels",
    "ch_mult": "channel_mult",
    "num_res_blocks": "num_res_blocks",
    "z_channels": "z_channels",
    "in_channels": "in_channels",
    "out_ch": "out_channels",
    "attn_blocks": "attn_blocks",
    "n_heads": "num_heads",
    "resolution": "resolution",
}
_IGNORED_DDCONFIG = {"double_z"}  # accepted by upstream's constructors and unused


def prefer_ema(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Upstream `load_from_ckpt`: every key k takes `model_ema.<k without dots>` when present; EMA keys dropped."""
    out: dict[str, Tensor] = {}
    for key in [k for k in state if "model_ema" not in k]:
        ema = state.pop("model_ema." + key.replace(".", ""), None)
        value = state.pop(key)
        out[key] = ema if ema is not None else value
    state.clear()
    return out


def _config_from_upstream(upstream_config: Any) -> dict[str, Any]:
    if upstream_config is None:
        return {}
    if hasattr(upstream_config, "items") and not isinstance(upstream_config, dict):
        upstream_config = dict(upstream_config.items())
    if not isinstance(upstream_config, dict):
        raise ConfigError(
            f"uniwetok upstream config must be a mapping (its ddconfig), got {type(upstream_config).__name__}"
        )
    dd = upstream_config.get("ddconfig", upstream_config)
    if hasattr(dd, "items") and not isinstance(dd, dict):
        dd = dict(dd.items())
    unknown = set(dd) - set(_DDCONFIG_KEYS) - _IGNORED_DDCONFIG
    if unknown:
        raise ConfigError(
            f"uniwetok ddconfig has unknown key(s) {sorted(unknown)}; upstream `Encoder`/`GANDecoder` take "
            f"{sorted(set(_DDCONFIG_KEYS) | _IGNORED_DDCONFIG)}"
        )
    out = {ours: dd[up] for up, ours in _DDCONFIG_KEYS.items() if up in dd}
    if "channel_mult" in out:
        out["channel_mult"] = [int(m) for m in out["channel_mult"]]
    return out


def _config_from_shapes(state: dict[str, Tensor]) -> dict[str, Any]:
    """The widths, depths and bit count a state dict (upstream names) implies; n_heads cannot be read."""
    try:
        conv_in = state["encoder.conv_in.weight"]
        conv_out = state["encoder.conv_out.weight"]
        dec_out = state["decoder.conv_out.weight"]
    except KeyError as exc:
        raise CheckpointError(
            f"not a UniWeTok VQModel state dict: no {exc.args[0]!r}; expected upstream keys encoder.* / decoder.* "
            "(autoencoder_uni.VQModel). BitDance `autoencoder.py` checkpoints are a different architecture."
        ) from None
    if "encoder.register_token.weight" not in state or "encoder.mid_block.0.conv1.weight" in state:
        raise CheckpointError(
            "these weights have no encoder.register_token (or have encoder.mid_block.*): they look like a BitDance "
            "`autoencoder.py` checkpoint (no attention, no SigLu, width changes in the ResBlocks), a different "
            "architecture from UniWeTok's `autoencoder_uni.py`; uniwetok cannot load them."
        )
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.block\.0\.", k))})
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    attn = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.mid_attn_blocks\.(\d+)\.", k))}
    ch = int(conv_in.shape[0])
    widths = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    if not widths or any(w % ch for w in widths):
        raise CheckpointError(f"uniwetok: encoder level widths {widths} are not multiples of conv_in's {ch} channels")
    out: dict[str, Any] = {
        "in_channels": int(conv_in.shape[1]),
        "channels": ch,
        "channel_mult": [w // ch for w in widths],
        "num_res_blocks": len(blocks),
        "z_channels": int(conv_out.shape[0]),
        "out_channels": int(dec_out.shape[0]),
        "attn_blocks": len(attn),
    }
    out["register_tokens"] = int(state["encoder.register_token.weight"].shape[0])
    return out


def convert_uniwetok(
    state_dict: dict[str, Tensor], upstream_config: Any = None, **overrides: Any
) -> UniWeTokTokenizer:
    """Upstream `autoencoder_uni.VQModel` weights (+ its ddconfig) -> `UniWeTokTokenizer`.

    Takes the plain state dict or a checkpoint dict holding it under `state_dict`; prefers `model_ema.*`
    copies like upstream's loader; drops training-only modules (anything outside encoder.* / decoder.*,
    e.g. loss, discriminator, teacher); loads strictly. Without a config the shapes give every size
    but n_heads (16, upstream's default); with one, the two must agree. `overrides` set our config
    fields (e.g. group_bits=16).
    """
    from registry.config import model_config

    if isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    state = prefer_ema(dict(state_dict))
    dropped = [k for k in state if not k.startswith(("encoder.", "decoder."))]
    for k in dropped:
        del state[k]
    inferred = _config_from_shapes(state)
    given = _config_from_upstream(upstream_config)
    clash = {k: (given[k], inferred[k]) for k in inferred if k in given and given[k] != inferred[k]}
    if clash:
        detail = ", ".join(f"{k}: config {a} vs weights {b}" for k, (a, b) in clash.items())
        raise CheckpointError(f"uniwetok: the upstream config does not describe these weights ({detail})")
    config = model_config(UniWeTokConfig, {**inferred, **given}, overrides, where="uniwetok converter")
    with torch.device("meta"):
        tok = UniWeTokTokenizer(config)
    ours = {our_key(k): state.pop(k) for k in list(state)}
    ours = {k: v.float() if v.is_floating_point() else v for k, v in ours.items()}
    _load_assign(tok, ours)
    tok.eval()
    return tok


def _load_assign(tok: UniWeTokTokenizer, state: dict[str, Tensor]) -> None:
    """Strict load without copying; problems are named with upstream's key names first."""
    own = tok.state_dict(keep_vars=True)
    missing = [upstream_key(k) for k in own if k not in state]
    unmapped = [upstream_key(k) for k in state if k not in own]
    if missing or unmapped:
        problems = []
        if missing:
            problems.append(f"missing ({len(missing)}): {', '.join(missing[:8])}")
        if unmapped:
            problems.append(f"unmapped ({len(unmapped)}): {', '.join(unmapped[:8])}")
        raise CheckpointError(
            "uniwetok: the upstream weights do not fit the model their config describes: " + " | ".join(problems)
            + " (upstream key names). Check the ddconfig (ch, ch_mult, num_res_blocks, z_channels, attn_blocks)."
        )
    load_state_strict(tok, state, "uniwetok upstream checkpoint", assign=True)


register_tokenizer(UniWeTokTokenizer, variants=("uniwetok-d32c128", "uniwetok-tiny"))
register_converter("uniwetok", convert_uniwetok)

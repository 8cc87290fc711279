"""TokenFlow (Qu et al., CVPR 2025): one index into a semantic and a pixel codebook, coarse to fine.

A semantic branch (a CLIP or SigLIP teacher ViT fine-tuned with the tokenizer, a task layer down to
32-d codes, a small BEiT-style ViT that rebuilds the teacher's features) and a pixel branch (a
VQGAN-style conv encoder/decoder with 8-d codes) are quantized together: each token's id is the
argmin of the summed semantic and pixel distances, so one id names both code vectors. Tokens come in
VAR's multi-scale residual schedule (scales 1, 2, 4, ..., 16 at 256 px for the CLIP checkpoint: 817
ids per image, flat, coarse first, row-major inside each scale), which is also upstream's own layout.

The teachers are timm VisionTransformers (CLIP / SigLIP architectures) built without downloads; the
published checkpoints already hold the fine-tuned teacher weights, which the converter maps onto
timm's names. Upstream: github.com/ByteFlow-AI/TokenFlow (Apache-2.0), weights on the Hub at
ByteFlow-AI/TokenFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry import register_converter, register_tokenizer
from registry.checkpoint import load_state_strict
from registry.errors import CheckpointError, ConfigError, InputError
from zoo.layers.attention import attention
from zoo.layers.quantize.dual import DualCodebookVQ
from zoo.layers.quantize.multiscale import MultiScaleResidualVQ
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, check_ids
from zoo.tokens import Tokens

TEACHERS = ("clip", "siglip")


@dataclass
class TokenFlowConfig:
    """Hyperparameters; the defaults are the published CLIP ViT-B/16 checkpoint (256 px, 32k codes).

    `scales` is the multi-scale schedule (side of each square token grid, coarse to fine); its last
    entry must equal the latent grid (`image_size // teacher_patch_size`). The published checkpoints
    were trained on their full schedule (upstream randomly drops one non-first scale in 10% of training
    steps), so another schedule, e.g. the single-scale `[16]` users asked upstream for, runs but gives
    tokens the checkpoint was never trained to decode: expect worse reconstructions.
    """

    teacher: str = "clip"  # "clip" (OpenAI CLIP ViT) or "siglip" (SigLIP so400m)
    image_size: int = 256
    scales: list[int] = field(default_factory=lambda: [1, 2, 4, 6, 8, 10, 12, 14, 16])
    codebook_size: int = 32768
    semantic_code_dim: int = 32
    pixel_code_dim: int = 8
    # teacher ViT (a timm architecture, random init; the checkpoint carries its weights)
    teacher_arch: str = "vit_base_patch16_clip_quickgelu_224"
    teacher_pos_size: int = 224  # the image size the teacher's position table covers
    teacher_patch_size: int = 16
    teacher_width: int = 768
    teacher_depth: int = 12  # blocks that run (SigLIP: upstream reads the output of the second-last)
    teacher_heads: int = 12
    teacher_mlp_ratio: float = 4.0
    # semantic decoder (BEiT-style ViT on the 32-d codes, patch 1) and its task layer
    semantic_decoder_width: int = 768
    semantic_decoder_depth: int = 3
    semantic_decoder_heads: int = 12
    semantic_decoder_pos_grid: int = 14
    semantic_out_dim: int = 512
    # pixel branch (VQGAN encoder / decoder)
    z_channels: int = 256
    encoder_ch: int = 128
    encoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    encoder_res_blocks: int = 2
    decoder_ch: int = 256
    decoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    decoder_res_blocks: int = 4
    norm_groups: int = 32


def check_config(c: TokenFlowConfig) -> None:
    """Refuse configs whose parts cannot fit together, naming the field to change."""
    if c.teacher not in TEACHERS:
        raise ConfigError(f"teacher must be one of {TEACHERS}; got {c.teacher!r}")
    grid = c.image_size // c.teacher_patch_size
    scales = list(c.scales)
    if not scales or any(s < 1 for s in scales) or any(b <= a for a, b in zip(scales, scales[1:], strict=False)):
        raise ConfigError(f"scales must be increasing positive grid sides, e.g. [1, 2, ..., {grid}]; got {scales}")
    if scales[-1] != grid:
        raise ConfigError(
            f"the last scale must equal the latent grid image_size // teacher_patch_size = {grid}; got scales "
            f"{scales}. Change `scales` or `image_size` together."
        )
    if c.teacher == "siglip" and grid != c.teacher_pos_size // c.teacher_patch_size:
        raise ConfigError(
            f"the SigLIP teacher runs at its native grid only ({c.teacher_pos_size} px); got image_size {c.image_size}"
        )
    if len(c.encoder_ch_mult) != len(c.decoder_ch_mult):
        raise ConfigError("encoder_ch_mult and decoder_ch_mult must have the same number of levels")


# -- attention (timm-compatible parameter names, shared backend) -----------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention with timm's parameter names (`qkv`, `proj`) on the shared backend.

    Passed to timm's VisionTransformer as `attn_layer`, so the teachers keep timm's key names while
    every attention call goes through `zoo.layers.attention`.
    """

    def __init__(
        self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_norm: bool = False,
        scale_norm: bool = False, proj_bias: bool = True, **_: Any,
    ) -> None:
        super().__init__()
        if qk_norm or scale_norm:
            raise ConfigError("TokenFlow's ViTs have no q/k norm; build them with qk_norm=False")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


# -- ViTs (teacher and semantic decoder) ----------------------------------------------------------------


def build_teacher(c: TokenFlowConfig) -> nn.Module:
    """The teacher as a timm VisionTransformer of its published architecture, randomly initialised."""
    common: dict[str, Any] = dict(
        pretrained=False, num_classes=0, global_pool="", attn_layer=SelfAttention,
        img_size=c.teacher_pos_size, patch_size=c.teacher_patch_size, embed_dim=c.teacher_width,
        depth=c.teacher_depth, num_heads=c.teacher_heads, mlp_ratio=c.teacher_mlp_ratio,
    )
    if c.teacher == "clip":  # OpenAI CLIP: class token, ln_pre, QuickGELU, ln_post on every token
        extra: dict[str, Any] = dict(class_token=True, pre_norm=True, final_norm=True, act_layer="quick_gelu",
                                     norm_layer=partial(nn.LayerNorm, eps=1e-5))
    else:  # SigLIP (HF SiglipVisionModel): no class token, tanh GELU, hidden state before the last block
        extra = dict(class_token=False, final_norm=False, act_layer="gelu_tanh",
                     norm_layer=partial(nn.LayerNorm, eps=1e-6))
    return timm.create_model(c.teacher_arch, **common, **extra)


def build_semantic_decoder(c: TokenFlowConfig) -> nn.Module:
    """BEiT-style ViT on the semantic codes (patch 1): timm's VisionTransformer, exact-erf GELU."""
    return timm.models.vision_transformer.VisionTransformer(
        img_size=c.semantic_decoder_pos_grid, patch_size=1, in_chans=c.semantic_code_dim, num_classes=0,
        global_pool="", embed_dim=c.semantic_decoder_width, depth=c.semantic_decoder_depth,
        num_heads=c.semantic_decoder_heads, mlp_ratio=4.0, qkv_bias=True, class_token=True, final_norm=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU, attn_layer=SelfAttention,
    )


def interpolate_pos_embed(pos: Tensor, prefix: int, grid: int) -> Tensor:
    """Position table (1, prefix + n*n, D) for a grid x grid input, resampled as upstream does.

    Upstream (DINO's trick) calls bicubic interpolation with scale_factor (grid + 0.1) / n rather than
    size=grid, which samples the table at slightly different points; this keeps upstream's numbers.
    """
    n = math.isqrt(pos.shape[1] - prefix)
    if n == grid:
        return pos
    patch = pos[:, prefix:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    factor = (grid + 0.1) / n
    patch = F.interpolate(patch, scale_factor=(factor, factor), mode="bicubic")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat([pos[:, :prefix], patch], dim=1)


def run_vit(vit: nn.Module, x: Tensor) -> Tensor:
    """Patch tokens (B, grid*grid, D) after the final norm, class token dropped; grids of any size."""
    tokens = vit.patch_embed.proj(x)
    grid = tokens.shape[-1]
    tokens = vit.patch_embed.norm(tokens.flatten(2).transpose(1, 2))
    prefix = 0
    if vit.cls_token is not None:
        tokens = torch.cat([vit.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        prefix = 1
    tokens = tokens + interpolate_pos_embed(vit.pos_embed, prefix, grid)
    tokens = vit.blocks(vit.norm_pre(tokens))
    return vit.norm(tokens)[:, prefix:]


def task_layer(width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, out))


# -- pixel branch (VQGAN) ---------------------------------------------------------------------------------


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions (1x1-conv projections)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        out = attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 conv after padding right and bottom by one (taming's asymmetric padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: res blocks (each followed by attention on the coarsest level), then resampling."""

    def __init__(self, c_in: int, c_out: int, blocks: int, attend: bool, resample: str | None, groups: int) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(blocks))
        self.attn = nn.ModuleList(AttnBlock(c_out, groups) for _ in range(blocks if attend else 0))
        if resample == "down":
            self.downsample = Downsample(c_out)
        elif resample == "up":
            self.upsample = Upsample(c_out)
        self.resample = resample

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.res):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        if self.resample == "down":
            x = self.downsample(x)
        elif self.resample == "up":
            x = self.upsample(x)
        return x


def middle(channels: int, groups: int) -> nn.ModuleList:
    return nn.ModuleList([ResBlock(channels, channels, groups), AttnBlock(channels, groups),
                          ResBlock(channels, channels, groups)])


class PixelEncoder(nn.Module):
    """Image (B, 3, H, W) -> (B, z_channels, H/2^(L-1), W/2^(L-1))."""

    def __init__(self, ch: int, ch_mult: Sequence[int], blocks: int, z_channels: int, groups: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        widths = [ch * m for m in ch_mult]
        last = len(widths) - 1
        self.conv_blocks = nn.ModuleList(
            Level(ch * ([1, *ch_mult][i]), w, blocks, i == last, None if i == last else "down", groups)
            for i, w in enumerate(widths)
        )
        self.mid = middle(widths[-1], groups)
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class PixelDecoder(nn.Module):
    """(B, z_channels, h, w) -> image (B, 3, h*2^(L-1), w*2^(L-1))."""

    def __init__(self, ch: int, ch_mult: Sequence[int], blocks: int, z_channels: int, groups: int) -> None:
        super().__init__()
        widths = [ch * m for m in reversed(ch_mult)]
        self.conv_in = nn.Conv2d(z_channels, widths[0], 3, padding=1)
        self.mid = middle(widths[0], groups)
        last = len(widths) - 1
        self.conv_blocks = nn.ModuleList(
            Level(widths[max(i - 1, 0)], w, blocks + 1, i == 0, None if i == last else "up", groups)
            for i, w in enumerate(widths)
        )
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# -- the tokenizer --------------------------------------------------------------------------------------


class TokenFlowTokenizer(Tokenizer):
    """Image -> one flat sequence of multi-scale ids (B, sum of s*s), shared by two codebooks.

    `encode` gives Tokens with ids (B, L) in upstream's order (scale by scale, coarse first, row-major
    inside a scale) and `meta["scales"]`; `scale_grids` splits them into per-scale grids (B, s, s).
    `decode` gives pixels, `semantic_features` the rebuilt teacher features (B, grid*grid, D), `embed`
    the code vectors of ids (semantic by default, for understanding models) and `quantized` the summed
    multi-scale codes (B, grid, grid, semantic + pixel dims) upstream feeds its understanding model.
    Any prefix of the scale schedule decodes (coarse-only previews).
    """

    family = "tokenflow"
    config_class = TokenFlowConfig
    parity_cases = ("tokenflow/a",)  # ../shared/parity/tokenflow/a: tokenflow-clipb-32k-enhanced

    def __init__(self, config: TokenFlowConfig) -> None:
        super().__init__(config)
        check_config(config)
        c = config
        self.teacher = build_teacher(c)
        self.to_semantic_code = task_layer(c.teacher_width, c.semantic_code_dim)
        self.pixel_encoder = PixelEncoder(c.encoder_ch, c.encoder_ch_mult, c.encoder_res_blocks, c.z_channels,
                                          c.norm_groups)
        self.to_pixel_code = nn.Conv2d(c.z_channels, c.pixel_code_dim, 1)
        self.quantizer = MultiScaleResidualVQ(
            DualCodebookVQ(c.codebook_size, c.semantic_code_dim, c.pixel_code_dim, l2_norm=True), list(c.scales)
        )
        self.from_pixel_code = nn.Conv2d(c.pixel_code_dim, c.z_channels, 1)
        self.pixel_decoder = PixelDecoder(c.decoder_ch, c.decoder_ch_mult, c.decoder_res_blocks, c.z_channels,
                                          c.norm_groups)
        self.semantic_decoder = build_semantic_decoder(c)
        self.to_teacher_features = task_layer(c.semantic_decoder_width, c.semantic_out_dim)

    # -- geometry -------------------------------------------------------------------------------------
    @property
    def grid(self) -> int:
        return self.config.image_size // self.config.teacher_patch_size

    @property
    def scales(self) -> list[int]:
        return [int(s) for s in self.config.scales]

    @property
    def num_tokens(self) -> int:
        return sum(s * s for s in self.scales)

    @property
    def pixel_size(self) -> int:
        """Side of the image the pixel branch works at (the latent grid times its downsampling)."""
        return self.grid * 2 ** (len(self.config.encoder_ch_mult) - 1)

    @property
    def spec(self) -> TokenSpec:
        c = self.config
        step = c.image_size // self.grid
        return TokenSpec(
            modality="image",
            kind="discrete",
            codebook_sizes=(c.codebook_size,),
            tokens_per_item=self.num_tokens,
            downsample=(step, step),
            channels=3,
            input_size=(c.image_size, c.image_size),
            notes=(
                f"multi-scale residual ids, scales {self.scales} ({self.num_tokens} per image, coarse first); "
                f"one id indexes a {c.semantic_code_dim}-d semantic and a {c.pixel_code_dim}-d pixel code"
            ),
        )

    # -- tensor paths ---------------------------------------------------------------------------------
    def teacher_features(self, x: Tensor) -> Tensor:
        """The fine-tuned teacher's patch tokens (B, grid*grid, width) for an image in [-1, 1]."""
        if self.config.teacher == "siglip":  # upstream's ScalingLayerForSigLip: through [0, 255] and back
            x = (((x + 1.0) * 127.5).clamp(0.0, 255.0) / 255.0 - 0.5) / 0.5
        return run_vit(self.teacher, x)

    def latent(self, x: Tensor) -> Tensor:
        """Pre-quantization latent (B, semantic + pixel code dims, grid, grid), semantic channels first."""
        tokens = self.to_semantic_code(self.teacher_features(x))
        semantic = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, self.grid, self.grid)
        pixel_in = x
        if x.shape[-1] != self.pixel_size or x.shape[-2] != self.pixel_size:
            pixel_in = F.interpolate(x, size=(self.pixel_size, self.pixel_size), mode="bicubic")
        pixel = self.to_pixel_code(self.pixel_encoder(pixel_in))
        return torch.cat([semantic, pixel], dim=1)

    def encode_ids(self, x: Tensor) -> Tensor:
        """Image (B, 3, S, S) in [-1, 1] at the variant's size -> ids (B, L), upstream order."""
        return self.quantizer.encode(self.latent(x).permute(0, 2, 3, 1))

    def quantized(self, ids: Tensor) -> Tensor:
        """Summed multi-scale code vectors (B, grid, grid, semantic + pixel dims) of flat ids."""
        return self.quantizer.decode(ids)

    def pixels_from_codes(self, codes: Tensor) -> Tensor:
        pixel = codes[..., self.config.semantic_code_dim :].permute(0, 3, 1, 2)
        image = self.pixel_decoder(self.from_pixel_code(pixel))
        size = self.config.image_size
        if image.shape[-1] != size or image.shape[-2] != size:
            image = F.interpolate(image, size=(size, size), mode="bicubic")
        return image

    def semantic_from_codes(self, codes: Tensor) -> Tensor:
        semantic = codes[..., : self.config.semantic_code_dim].permute(0, 3, 1, 2)
        return self.to_teacher_features(run_vit(self.semantic_decoder, semantic))

    def decode_ids(self, ids: Tensor) -> Tensor:
        """Flat ids (B, L) over a prefix of the scales -> image (B, 3, S, S), not clamped."""
        return self.pixels_from_codes(self.quantized(ids))

    def decode_semantic_ids(self, ids: Tensor) -> Tensor:
        """Flat ids (B, L) -> rebuilt teacher features (B, grid*grid, semantic_out_dim)."""
        return self.semantic_from_codes(self.quantized(ids))

    # -- Tokens API -----------------------------------------------------------------------------------
    def encode(self, x: Any, resize: bool = False, **kwargs: Any) -> Tokens:
        """Tokens of images (B, 3, S, S) in [-1, 1]; other sizes are refused unless `resize=True`.

        With `resize=True` the images are resized bicubically (antialiased, aspect ratio not kept) to
        the variant's size and their size is recorded, so `decode` can resize the result back.
        """
        if kwargs:
            raise InputError(f"unknown encode option(s) {sorted(kwargs)}; TokenFlow's encode takes `resize`")
        x = self.prepare(x)
        size = self.config.image_size
        original = None
        if tuple(x.shape[-2:]) != (size, size):
            if not resize:
                raise InputError(
                    f"{self.name} takes {size}x{size} images (its teacher's position table and scale schedule "
                    f"are fixed); got {x.shape[-2]}x{x.shape[-1]}. Center-crop and resize to {size} first, or "
                    "call encode(x, resize=True) to resize (aspect ratio not kept; decode resizes back)."
                )
            original = torch.tensor([list(x.shape[-2:])] * x.shape[0], dtype=torch.long)
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp(-1.0, 1.0)
        ids = self.encode_ids(x)
        return self._tokens(ids, original)

    def _tokens(self, ids: Tensor, original: Tensor | None = None) -> Tokens:
        count = self.scale_count(ids)
        return self.make_tokens(
            ids, grid=(int(ids.shape[1]),), original_size=original,
            meta={"scales": self.scales[:count], "layout": "flat, scale by scale (coarse first), row-major"},
        )

    def scale_count(self, ids: Tensor) -> int:
        """How many scales (a prefix of the schedule) flat ids (B, L) cover; InputError if none fits."""
        if ids.dim() != 2:
            raise InputError(
                f"TokenFlow ids are flat (B, L) (or (L,) for one image); got shape {tuple(ids.shape)}. "
                "Concatenate per-scale grids with merge_scales(grids)."
            )
        total = 0
        for count, s in enumerate(self.scales, start=1):
            total += s * s
            if total == ids.shape[1]:
                return count
        prefixes = [sum(s * s for s in self.scales[: i + 1]) for i in range(len(self.scales))]
        raise InputError(
            f"{ids.shape[1]} ids do not fill a prefix of the scale schedule {self.scales}; "
            f"expected one of {prefixes} ids per image ({self.num_tokens} for the full schedule)."
        )

    def _ids(self, tokens: Tokens | Tensor) -> Tensor:
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        if ids is None:
            raise InputError("these Tokens hold no ids; TokenFlow decodes discrete ids only")
        ids = check_ids(ids, self.config.codebook_size)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        self.scale_count(ids)
        return ids.to(self.device)

    def decode(self, tokens: Tokens | Tensor, restore_size: bool = True, **kwargs: Any) -> Tensor:
        """Pixels (B, 3, S, S) of Tokens or flat ids; resized back when `encode(..., resize=True)` made them."""
        if kwargs:
            raise InputError(f"unknown decode option(s) {sorted(kwargs)}; TokenFlow's decode takes `restore_size`")
        image = self.decode_ids(self._ids(tokens))
        original = tokens.original_size if isinstance(tokens, Tokens) else None
        if restore_size and original is not None:
            h, w = (int(v) for v in original[0])
            if (h, w) != tuple(image.shape[-2:]):
                image = F.interpolate(image, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        return image

    def semantic_features(self, tokens: Tokens | Tensor) -> Tensor:
        """Teacher features rebuilt from ids (B, grid*grid, semantic_out_dim): CLIP/SigLIP-like tokens."""
        return self.decode_semantic_ids(self._ids(tokens))

    def embed(self, ids: Tensor, part: str = "semantic") -> Tensor:
        """Unit code vectors of ids (...): "semantic" (...,32), "pixel" (...,8) or "both" (concatenated)."""
        ids = check_ids(ids, self.config.codebook_size).to(self.device)
        semantic, pixel = self.quantizer.quantizer.decode_pair(ids)
        if part == "semantic":
            return semantic
        if part == "pixel":
            return pixel
        if part == "both":
            return torch.cat([semantic, pixel], dim=-1)
        raise InputError(f"part must be 'semantic', 'pixel' or 'both'; got {part!r}")

    def scale_grids(self, tokens: Tokens | Tensor) -> list[Tensor]:
        """Flat ids -> per-scale grids [(B, s, s), ...] (coarse first)."""
        ids = self._ids(tokens)
        return self.quantizer.split_ids(ids)

    def merge_scales(self, grids: Sequence[Tensor]) -> Tensor:
        """Per-scale grids [(B, s, s), ...] (a prefix of the schedule) -> flat ids (B, L)."""
        for grid, s in zip(grids, self.scales, strict=False):
            if grid.dim() != 3 or tuple(grid.shape[1:]) != (s, s):
                shapes = [tuple(g.shape) for g in grids]
                raise InputError(f"expected grids (B, s, s) for scales {self.scales}; got {shapes}")
        if len(grids) > len(self.scales) or not grids:
            raise InputError(f"expected 1 to {len(self.scales)} grids (scales {self.scales}); got {len(grids)}")
        return torch.cat([g.reshape(g.shape[0], -1) for g in grids], dim=1)

    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """Upstream's `encode(x)[2]` layout is ours: flat (B, L), scale by scale, row-major."""
        return self._ids(tokens)

    def tokens_from_upstream(self, ids: Any, **kwargs: Any) -> Tokens:
        """Tokens from upstream ids (B, L) or (L,) (e.g. made with upstream's `encode(x)[2]`)."""
        return self._tokens(self._ids(torch.as_tensor(ids)))

    # -- training ---------------------------------------------------------------------------------------
    def forward(self, x: Tensor, teacher_target: Tensor | None = None) -> dict[str, Any]:
        """Reconstruction and quantizer losses; with `teacher_target` (features of the frozen original
        teacher, (B, grid*grid, semantic_out_dim)) also upstream's cosine feature loss."""
        out = self.quantizer(self.latent(x).permute(0, 2, 3, 1))
        image = self.pixels_from_codes(out.quantized)
        semantic = self.semantic_from_codes(out.quantized)
        losses = dict(out.losses)
        losses["reconstruction"] = F.mse_loss(image, x)
        if teacher_target is not None:
            cos = F.cosine_similarity(semantic, teacher_target.to(semantic), dim=-1)
            losses["semantic"] = (1.0 - cos).mean()
        return {"reconstruction": image, "semantic_features": semantic, "ids": out.ids, "losses": losses,
                "usage": out.usage}


# -- converter ---------------------------------------------------------------------------------------------

# Upstream's per-teacher constants (tokenizer/vq_model.py, TokenFlow.__init__): teacher architecture, the
# semantic decoder's width / position grid / output width, and the scale schedule.
_UPSTREAM_TEACHERS: dict[str, dict[str, Any]] = {
    "clipb_224": dict(
        teacher="clip", teacher_arch="vit_base_patch16_clip_quickgelu_224", teacher_pos_size=224,
        teacher_patch_size=16, teacher_width=768, teacher_depth=12, teacher_heads=12, teacher_mlp_ratio=4.0,
        semantic_decoder_width=768, semantic_decoder_pos_grid=14, semantic_out_dim=512,
    ),
    # google/siglip-so400m-patch14-384: 27 blocks, of which upstream runs 26 (hidden_states[-2]).
    "siglip_384": dict(
        teacher="siglip", teacher_arch="vit_so400m_patch14_siglip_384", teacher_pos_size=384,
        teacher_patch_size=14, teacher_width=1152, teacher_depth=26, teacher_heads=16, teacher_mlp_ratio=3.7362,
        semantic_decoder_width=1152, semantic_decoder_pos_grid=24, semantic_out_dim=1152, image_size=384,
        scales=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 22, 27],
    ),
}
_CONTAINERS = ("ema", "model", "state_dict")  # upstream's loaders take the first present, in this order


def _unwrap(state: dict[str, Any]) -> dict[str, Tensor]:
    if any(isinstance(v, Tensor) for v in state.values()):
        return state
    for key in _CONTAINERS:
        if isinstance(state.get(key), dict):
            return state[key]
    raise CheckpointError(
        f"expected a TokenFlow state dict or a checkpoint holding one under {list(_CONTAINERS)}; found keys "
        f"{list(state)[:8]}"
    )


def _infer_upstream_config(state: dict[str, Tensor]) -> dict[str, Any]:
    """Upstream ModelArgs read off the state dict, for checkpoints converted without their config."""
    siglip = any(k.startswith("encoder_vqkd.") and ".patch_embedding." in k for k in state)
    return {
        "teacher": "siglip_384" if siglip else "clipb_224",
        "codebook_size": int(state["quantize.embedding_vqgan.weight"].shape[0]),
        "codebook_embed_dim": int(state["quantize.embedding_vqgan.weight"].shape[1]),
        "semantic_code_dim": int(state["quantize.embedding_vqkd.weight"].shape[1]),
        "enhanced_decoder": int(state["decoder.conv_out.weight"].shape[1]) == 256,
        "infer_interpolate": not siglip,
    }


def tokenflow_config_from_upstream(upstream_config: Any, state: dict[str, Tensor] | None = None) -> dict[str, Any]:
    """Our config (as a dict) from upstream hyperparameters as upstream names them.

    Takes the fixture / variant form (`{"ModelArgs": {...}, "image_size": ..., "scale_rq_layers": ...}`),
    upstream's keyword arguments alone (`{"teacher": "clipb_224", "codebook_size": 32768, ...}`), or None
    (read off the state dict).
    """
    if upstream_config is None:
        if state is None:
            raise ConfigError("an upstream config or the state dict is needed to build TokenFlow")
        upstream_config = _infer_upstream_config(state)
    upstream = dict(upstream_config)
    args = dict(upstream.get("kwargs") or {})
    args.update(upstream.get("ModelArgs") or {})
    if not args:
        args = upstream
    teacher = args.get("teacher")
    if teacher not in _UPSTREAM_TEACHERS:
        raise ConfigError(
            f"TokenFlow teacher {teacher!r} is not supported; the published checkpoints use "
            f"{sorted(_UPSTREAM_TEACHERS)} (vitamin_xlarge_256 has no released checkpoint)"
        )
    ours = dict(_UPSTREAM_TEACHERS[teacher])
    if teacher == "clipb_224":
        interpolate = bool(args.get("infer_interpolate", False))
        ours["image_size"] = 256 if interpolate else 224
        ours["scales"] = [1, 2, 4, 6, 8, 10, 12, 14, 16] if interpolate else [1, 2, 4, 6, 8, 10, 12, 14]
    enhanced = bool(args.get("enhanced_decoder", False))
    ours.update(
        codebook_size=int(args.get("codebook_size", 16384)),
        pixel_code_dim=int(args.get("codebook_embed_dim", 8)),
        semantic_code_dim=int(args.get("semantic_code_dim", 32)),
        z_channels=int(args.get("z_channels", 256)),
        encoder_ch_mult=list(args.get("encoder_ch_mult", [1, 1, 2, 2, 4])),
        decoder_ch_mult=list(args.get("decoder_ch_mult", [1, 1, 2, 2, 4])),
        decoder_ch=256 if enhanced else 128,
        decoder_res_blocks=4 if enhanced else 2,
    )
    if upstream.get("scale_rq_layers") and list(upstream["scale_rq_layers"]) != ours["scales"]:
        raise ConfigError(
            f"upstream config lists scales {list(upstream['scale_rq_layers'])} but teacher {teacher} with "
            f"infer_interpolate={args.get('infer_interpolate')} uses {ours['scales']}; check the config"
        )
    if upstream.get("image_size") and int(upstream["image_size"]) != ours["image_size"]:
        raise ConfigError(
            f"upstream config says image_size {upstream['image_size']} but teacher {teacher} with "
            f"infer_interpolate={args.get('infer_interpolate')} works at {ours['image_size']} px"
        )
    return ours


def _teacher_key(key: str, teacher: str, depth: int) -> tuple[str | None, str]:
    """Our name for an upstream teacher key (None: not used by upstream's forward), and the rule applied."""
    if teacher == "clip":
        rest = key[len("encoder_vqkd."):]
        simple = {"conv1.weight": "patch_embed.proj.weight", "class_embedding": "cls_token",
                  "positional_embedding": "pos_embed"}
        if rest in simple:
            return "teacher." + simple[rest], "clip"
        for old, new in (("ln_pre.", "norm_pre."), ("ln_post.", "norm.")):
            if rest.startswith(old):
                return "teacher." + new + rest[len(old):], "clip"
        if rest.startswith("transformer.resblocks."):
            index, leaf = rest[len("transformer.resblocks."):].split(".", 1)
            for old, new in (("attn.in_proj_weight", "attn.qkv.weight"), ("attn.in_proj_bias", "attn.qkv.bias"),
                             ("attn.out_proj.", "attn.proj."), ("ln_1.", "norm1."), ("ln_2.", "norm2."),
                             ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")):
                if leaf.startswith(old):
                    return f"teacher.blocks.{index}.{new}{leaf[len(old):]}", "clip"
        return "", "unknown"
    # HF SiglipVisionModel keys: "vision_model.*" (transformers 4, which upstream used) or flat (transformers 5)
    rest = key[len("encoder_vqkd."):]
    rest = rest[len("vision_model."):] if rest.startswith("vision_model.") else rest
    if rest.startswith(("post_layernorm.", "head.")) or rest == "embeddings.position_ids":
        return None, "unused"
    simple = {"embeddings.patch_embedding.weight": "patch_embed.proj.weight",
              "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
              "embeddings.position_embedding.weight": "pos_embed"}
    if rest in simple:
        return "teacher." + simple[rest], "siglip"
    if rest.startswith("encoder.layers."):
        index, leaf = rest[len("encoder.layers."):].split(".", 1)
        if int(index) >= depth:
            return None, "unused"
        for old, new in (("self_attn.out_proj.", "attn.proj."), ("layer_norm1.", "norm1."),
                         ("layer_norm2.", "norm2."), ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2.")):
            if leaf.startswith(old):
                return f"teacher.blocks.{index}.{new}{leaf[len(old):]}", "siglip"
        if leaf.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
            return f"teacher.blocks.{index}.attn.qkv.{leaf.rsplit('.', 1)[1]}", "siglip-qkv"
    return "", "unknown"


_RENAMES = (
    ("encoder.", "pixel_encoder."),
    ("decoder.", "pixel_decoder."),
    ("quant_conv.", "to_pixel_code."),
    ("post_quant_conv.", "from_pixel_code."),
    ("encode_task_layer.", "to_semantic_code."),
    ("decode_task_layer.", "to_teacher_features."),
    ("quantize.embedding_vqkd.weight", "quantizer.quantizer.codebook_a"),
    ("quantize.embedding_vqgan.weight", "quantizer.quantizer.codebook_b"),
)
_TRAINING_ONLY = ("quantize.codebook_used",)  # recent code indices kept for usage logging


def map_upstream_state(state: dict[str, Tensor], config: TokenFlowConfig) -> dict[str, Tensor]:
    """Upstream key names -> ours; pops from `state` as it goes (no second copy of the weights)."""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for key in list(state):
        value = state.pop(key)
        if value.is_floating_point() and value.dtype != torch.float32:
            value = value.float()
        if key in _TRAINING_ONLY:
            continue
        if key.startswith("encoder_vqkd."):
            name, rule = _teacher_key(key, config.teacher, config.teacher_depth)
            if rule == "unused":
                continue
            if rule == "unknown":
                unknown.append(key)
                continue
            assert name is not None
            if name.endswith(("cls_token", "pos_embed")):
                value = value.reshape(1, -1, value.shape[-1])
            if rule == "siglip-qkv":
                which = key.split("self_attn.")[1][0]  # q, k or v
                qkv.setdefault(name, {})[which] = value
                continue
            out[name] = value
            continue
        if key.startswith("decoder_vqkd."):
            rest = key[len("decoder_vqkd."):]
            if rest.endswith(("attn.q_bias", "attn.v_bias")):
                name = "semantic_decoder." + rest.rsplit(".", 1)[0] + ".qkv.bias"
                qkv.setdefault(name, {})[rest[-6]] = value
                continue
            if rest.startswith("fc_norm."):
                rest = "norm." + rest[len("fc_norm."):]
            out["semantic_decoder." + rest] = value
            continue
        for old, new in _RENAMES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            unknown.append(key)
    for name, parts in qkv.items():
        if name.startswith("semantic_decoder."):  # BEiT's qkv bias is (q_bias, 0, v_bias); a key bias is inert
            parts.setdefault("k", torch.zeros_like(parts["q"]))
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"incomplete attention projection for {name}: found {sorted(parts)} of q, k, v")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} upstream key(s) have no place in TokenFlow ({config.teacher} teacher): "
            f"{', '.join(unknown[:8])}. Is this a TokenFlow checkpoint of the configured teacher?"
        )
    return out


def convert_tokenflow(state_dict: dict[str, Any], upstream_config: Any = None, **overrides: Any) -> TokenFlowTokenizer:
    """Build TokenFlow from an upstream checkpoint (upstream key names) and upstream hyperparameters.

    `overrides` replace fields of our config after the upstream ones are mapped, e.g. `scales=[16]` for
    a single-scale schedule (see `TokenFlowConfig` on what that means for the published weights). The
    teacher weights come from the checkpoint; the training-only codebook-usage buffer and, for SigLIP,
    the teacher's parts upstream never runs (last block, post-norm, pooling head) are dropped.
    """
    from registry.config import model_config

    state = _unwrap(state_dict)
    config = model_config(TokenFlowConfig, tokenflow_config_from_upstream(upstream_config, state), overrides,
                          where="tokenflow converter")
    mapped = map_upstream_state(dict(state), config)  # renames only: tensors are shared, not copied
    with torch.device("meta"):
        tok = TokenFlowTokenizer(config)
    load_state_strict(tok, mapped, where="TokenFlow upstream checkpoint", assign=True)
    leftover = [n for n, t in [*tok.named_parameters(), *tok.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"TokenFlow tensors not filled by the checkpoint: {leftover[:8]}")
    tok.source = {"converted_from": "ByteFlow-AI/TokenFlow"}
    return tok.eval()


register_tokenizer(
    TokenFlowTokenizer, variants=("tokenflow-clipb-32k-enhanced", "tokenflow-siglip-32k", "tokenflow-tiny")
)
register_converter("tokenflow", convert_tokenflow)

"""UniFlow: a continuous image tokenizer with a patch-wise pixel flow decoder (arXiv 2510.10575).

A 448x448 image becomes 32x32 continuous tokens of 64 channels. The encoder is InternViT-300M (24
pre-norm layers with layer scale, CLS token, learned positions), adapted by layer-wise self-distillation;
a two-layer MLP squeezes its 1024-d features to the 64-d latent. Decoding lifts the latent back to
1024-d, mixes it with six global transformer blocks, and then a small AdaLN MLP (the flow head) maps
Gaussian noise to each 14x14 patch's pixels, conditioned on that patch's token. The official inference
integrates the flow with one Euler step and no guidance; `zoo.layers.flow` lets decode use more steps,
other schedules and solvers, CFG, or a diffusers scheduler.

Spaces. `encode` takes canonical images in [-1, 1] and `decode` returns them; inside, the model works
in upstream's ImageNet-normalised space ((x01 - mean) / std). The flow's state, its start noise and the
velocity live in that space, laid out like the image (B, 3, H, W): a 14x14 patch of the noise is the
noise of that patch's flow. `noise_from_upstream` maps upstream's (B*1024, 588) draw to this layout.

Tokens: no ids; `Tokens.latent` is (B, 32, 32, 64), row-major over the patch grid (upstream's
`latent_tokens` (B, 1024, 64) reshaped).

Upstream: github.com/ZhengrongYue/UniFlow `uniflow/modeling_uniflow.py` (`UniFlowVisionModel`); weights
on the Hub as `yuezhengrong/UniFlow` (model.safetensors, bfloat16).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.checkpoint import load_state_strict
from registry.errors import CheckpointError, ConfigError, InputError
from registry.registry import register_converter, register_tokenizer
from zoo.layers import flow
from zoo.layers.attention import attention
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, is_exporting
from zoo.tokens import Tokens

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class UniFlowConfig:
    """Hyperparameters; defaults are the published UniFlow (InternViT-300M, 448 px, 64-d latent)."""

    image_size: int = 448
    patch_size: int = 14
    in_channels: int = 3
    # InternViT encoder
    hidden_size: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    intermediate_size: int = 4096
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    # latent bottleneck (upstream chal_proj / chal_unproj)
    latent_channels: int = 64
    # global transformer blocks of the decoder (timm Block, torch LayerNorm eps)
    global_blocks: int = 6
    global_heads: int = 16
    global_mlp_ratio: float = 4.0
    global_norm_eps: float = 1e-5
    # patch-wise flow head (SimpleMLPAdaLN)
    head_width: int = 1024
    head_layers: int = 12
    time_frequencies: int = 256
    time_scale: float = 1000.0
    head_norm_eps: float = 1e-6
    # default sampler (the official inference: one Euler step, no CFG)
    sampling_steps: int = 1
    schedule: str = "linear"
    solver: str = "euler"
    cfg_scale: float = 1.0
    # the model's input space: ImageNet normalisation of [0, 1] pixels
    pixel_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    pixel_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    attention_backend: str | None = None


def _check_config(cfg: UniFlowConfig) -> None:
    if cfg.image_size % cfg.patch_size:
        raise ConfigError(f"uniflow: image_size {cfg.image_size} must be a multiple of patch_size {cfg.patch_size}")
    for width, heads, what in (
        (cfg.hidden_size, cfg.num_heads, "hidden_size/num_heads"),
        (cfg.hidden_size, cfg.global_heads, "hidden_size/global_heads"),
    ):
        if width % heads:
            raise ConfigError(f"uniflow: {what} = {width}/{heads} must divide evenly")
    if len(cfg.pixel_mean) != cfg.in_channels or len(cfg.pixel_std) != cfg.in_channels:
        raise ConfigError(f"uniflow: pixel_mean and pixel_std need {cfg.in_channels} values (one per channel)")
    if cfg.sampling_steps < 1:
        raise ConfigError(f"uniflow: sampling_steps must be >= 1, got {cfg.sampling_steps}")
    if cfg.solver not in flow.SOLVERS:
        raise ConfigError(f"uniflow: solver must be one of {flow.SOLVERS}, got {cfg.solver!r}")
    flow.time_grid(1, cfg.schedule)  # raises ConfigError for an unknown schedule name


# -- transformer blocks ------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention (fused `qkv`, `proj`) on the shared attention backend."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, backend: str | None) -> None:
        super().__init__()
        self.heads = heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v, backend=self.backend)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; with `layer_scale` it is InternViT's layer (x + ls * f(LN(x)))."""

    def __init__(
        self, dim: int, heads: int, hidden: int, eps: float, qkv_bias: bool, layer_scale: bool, backend: str | None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads, qkv_bias, backend)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden)
        self.ls1 = nn.Parameter(torch.ones(dim)) if layer_scale else None
        self.ls2 = nn.Parameter(torch.ones(dim)) if layer_scale else None

    def forward(self, x: Tensor) -> Tensor:
        a = self.attn(self.norm1(x))
        x = x + (a * self.ls1 if self.ls1 is not None else a)
        m = self.mlp(self.norm2(x))
        return x + (m * self.ls2 if self.ls2 is not None else m)


class InternViT(nn.Module):
    """InternViT encoder: patch conv, CLS + learned positions, pre-norm layers with layer scale."""

    def __init__(self, cfg: UniFlowConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.grid = cfg.image_size // cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, d))
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.intermediate_size, cfg.layer_norm_eps, cfg.qkv_bias, True,
                  cfg.attention_backend)
            for _ in range(cfg.num_layers)
        )

    def forward(self, pixels: Tensor) -> Tensor:
        """Normalised pixels (B, C, H, W) at the native size -> patch features (B, N, D), CLS dropped."""
        patches = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(patches.shape[0], -1, -1)
        x = torch.cat([cls, patches + self.pos_embed[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return x[:, 1:]


class Bottleneck(nn.Module):
    """Linear -> GELU -> Linear (upstream's chal_proj / chal_unproj)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim_in, hidden)
        self.proj = nn.Linear(hidden, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


# -- flow head ---------------------------------------------------------------------------------------


class TimestepEmbedding(nn.Module):
    """Sinusoidal features [cos, sin] of t (max period 10000) through a SiLU MLP (DiT's embedder)."""

    def __init__(self, width: int, frequencies: int) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.fc1 = nn.Linear(frequencies, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, t: Tensor) -> Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.frequencies % 2:
            features = torch.cat([features, torch.zeros_like(features[:, :1])], dim=-1)
        return self.fc2(F.silu(self.fc1(features.to(self.fc1.weight.dtype))))


class AdaLNResBlock(nn.Module):
    """x + gate * MLP(LN(x) * (1 + scale) + shift), (shift, scale, gate) from SiLU(y)."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.modulation = nn.Linear(width, 3 * width)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(F.silu(y)).chunk(3, dim=-1)
        h = self.norm(x) * (1 + scale) + shift
        return x + gate * self.fc2(F.silu(self.fc1(h)))


class AdaLNFinal(nn.Module):
    def __init__(self, width: int, out: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps, elementwise_affine=False)
        self.modulation = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, out)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale = self.modulation(F.silu(y)).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)


class PixelFlowHead(nn.Module):
    """Velocity of each patch's pixel flow given its noisy pixels, the time and its token's condition.

    Every patch is an independent row (upstream flattens B*N rows); t is one time per batch item.
    """

    def __init__(self, cfg: UniFlowConfig) -> None:
        super().__init__()
        pixels = cfg.in_channels * cfg.patch_size**2
        self.time_scale = cfg.time_scale
        self.time_embed = TimestepEmbedding(cfg.head_width, cfg.time_frequencies)
        self.cond_embed = nn.Linear(cfg.hidden_size, cfg.head_width)
        self.input_proj = nn.Linear(pixels, cfg.head_width)
        self.blocks = nn.ModuleList(AdaLNResBlock(cfg.head_width, cfg.head_norm_eps) for _ in range(cfg.head_layers))
        self.final = AdaLNFinal(cfg.head_width, pixels, cfg.head_norm_eps)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x (B, N, P) patch pixels, t (B,) flow time in [0, 1], cond (B, N, D) -> velocity (B, N, P)."""
        y = self.time_embed(t * self.time_scale)[:, None, :] + self.cond_embed(cond)
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, y)
        return self.final(h, y)


class Decoder(nn.Module):
    """Latent tokens -> the flow head's per-patch condition (unproject, global blocks, positions)."""

    def __init__(self, cfg: UniFlowConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        n = (cfg.image_size // cfg.patch_size) ** 2
        self.from_latent = Bottleneck(cfg.latent_channels, d, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))
        hidden = int(d * cfg.global_mlp_ratio)
        self.blocks = nn.ModuleList(
            Block(d, cfg.global_heads, hidden, cfg.global_norm_eps, True, False, cfg.attention_backend)
            for _ in range(cfg.global_blocks)
        )
        self.head_pos_embed = nn.Parameter(torch.zeros(1, n, d))

    def forward(self, latent: Tensor) -> Tensor:
        x = self.from_latent(latent) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x + self.head_pos_embed


# -- patch layout ------------------------------------------------------------------------------------


def image_to_patches(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), C*p*p): rows row-major over the patch grid, columns (c, i, j)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def patches_to_image(rows: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """Inverse of `image_to_patches` for a (gh, gw) patch grid."""
    b, _, p = rows.shape
    gh, gw = grid
    c = p // (patch * patch)
    x = rows.reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, gh * patch, gw * patch)


# -- tokenizer ---------------------------------------------------------------------------------------


class UniFlowTokenizer(Tokenizer):
    """UniFlow: image -> continuous tokens (B, 32, 32, 64); decode samples the pixel flow from noise."""

    family = "uniflow"
    config_class = UniFlowConfig
    modality = "image"
    parity_cases = ("uniflow/a",)

    def __init__(self, config: UniFlowConfig) -> None:
        super().__init__(config)
        _check_config(config)
        self.encoder = InternViT(config)
        self.to_latent = Bottleneck(config.hidden_size, config.hidden_size, config.latent_channels)
        self.decoder = Decoder(config)
        self.flow_head = PixelFlowHead(config)
        shape = (1, config.in_channels, 1, 1)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).reshape(shape), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).reshape(shape), persistent=False)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def grid(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def spec(self) -> TokenSpec:
        cfg = self.config
        return TokenSpec(
            modality="image",
            kind="continuous",
            latent_dim=cfg.latent_channels,
            tokens_per_item=self.grid * self.grid,
            downsample=(cfg.patch_size, cfg.patch_size),
            channels=cfg.in_channels,
            input_size=(cfg.image_size, cfg.image_size),
            stochastic_decode=True,
            notes=(
                f"continuous tokens ({cfg.latent_channels} channels per {cfg.patch_size}x{cfg.patch_size} patch; "
                f"smaller images are padded to {cfg.image_size} px); decode integrates a pixel flow from Gaussian "
                f"noise ({cfg.sampling_steps} {cfg.solver} step(s) by default): pass noise= or generator= to "
                "reproduce, steps=/schedule=/solver=/scheduler= to change the sampler"
            ),
        )

    # -- spaces ----------------------------------------------------------------------------------
    def to_model_space(self, x: Tensor) -> Tensor:
        """Canonical [-1, 1] pixels -> upstream's ImageNet-normalised input."""
        return ((x + 1) * 0.5 - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    def from_model_space(self, x: Tensor) -> Tensor:
        """ImageNet-normalised pixels (upstream's output) -> canonical [-1, 1] (not clamped)."""
        return (x * self.pixel_std.to(x.dtype) + self.pixel_mean.to(x.dtype)) * 2 - 1

    # -- tensor paths (exportable) ---------------------------------------------------------------
    def semantic_features(self, x: Tensor) -> Tensor:
        """Canonical image (B, C, S, S) at the native size -> InternViT features (B, N, hidden)."""
        if not is_exporting():
            self._check_native(x)
        return self.encoder(self.to_model_space(x))

    def encode_latent(self, x: Tensor) -> Tensor:
        """Canonical image at the native size -> continuous tokens (B, g, g, latent_channels)."""
        latent = self.to_latent(self.semantic_features(x))
        return latent.reshape(latent.shape[0], self.grid, self.grid, latent.shape[-1])

    def encode_ids(self, x: Tensor) -> Tensor:
        """The export path of the encoder: image -> latent (a continuous tokenizer has no ids)."""
        return self.encode_latent(x)

    def condition(self, latent: Tensor) -> Tensor:
        """Latent (B, g, g, C) -> the flow head's condition (B, g*g, hidden)."""
        return self.decoder(latent.reshape(latent.shape[0], -1, latent.shape[-1]).to(self.dtype))

    def velocity(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """Flow velocity in image layout: state x (B, C, S, S) (normalised space), t (B,), cond -> (B, C, S, S)."""
        p = self.config.patch_size
        rows = self.flow_head(image_to_patches(x, p), t, cond)
        return patches_to_image(rows, (x.shape[-2] // p, x.shape[-1] // p), p)

    def decode_ids(self, latent: Tensor, noise: Tensor | None = None) -> Tensor:
        """Latent (B, g, g, C) (+ noise (B, C, S, S)) -> canonical image with the configured sampler.

        Exportable: the configured steps unroll; without `noise` the graph draws it (RandomNormalLike).
        """
        cond = self.condition(latent)
        if noise is None:
            side = self.config.image_size
            noise = torch.randn_like(cond.new_zeros(cond.shape[0], self.config.in_channels, side, side))
        cfg = self.config
        x = flow.sample(lambda x, t: self.velocity(x, t, cond), noise.to(cond.dtype), cfg.sampling_steps,
                        schedule=cfg.schedule, solver=cfg.solver)
        return self.from_model_space(x)

    def encoder_module(self) -> nn.Module:
        return _EncodeGraph(self, "encode_latent")

    def decoder_module(self, part: str = "full") -> nn.Module:
        """Export wrapper. "full": (latent, noise) -> image with the configured steps unrolled.
        "condition": latent -> condition; "velocity": (x, t, condition) -> velocity, the single
        velocity-field step a runtime loops over (see `flow_recipe`)."""
        graphs = {"full": _DecodeGraph, "condition": _ConditionGraph, "velocity": _VelocityGraph}
        if part not in graphs:
            raise ConfigError(f"uniflow decoder_module part must be one of {sorted(graphs)}; got {part!r}")
        return graphs[part](self, part)

    def flow_recipe(self, steps: int | None = None, schedule: str | None = None, solver: str | None = None) -> dict:
        """How to run the sampling loop around the exported velocity step without PyTorch.

        x = noise (B, C, S, S) ~ N(0, 1); for each step i: x += (t[i+1] - t[i]) * v(x, t_eval, cond)
        with t_eval per the solver; the image is x * output_scale + output_shift (per channel).
        """
        cfg = self.config
        steps = cfg.sampling_steps if steps is None else steps
        schedule = schedule or cfg.schedule
        std = np.asarray(cfg.pixel_std, dtype=np.float64)
        mean = np.asarray(cfg.pixel_mean, dtype=np.float64)
        return {
            "times": flow.time_grid(steps, schedule).tolist(),
            "steps": steps,
            "schedule": schedule,
            "solver": solver or cfg.solver,
            "cfg_scale": cfg.cfg_scale,
            "rescale": 0.0,
            "uncond_condition": "zeros",
            "noise_shape": ["batch", cfg.in_channels, cfg.image_size, cfg.image_size],
            "output_scale": (2 * std).tolist(),
            "output_shift": (2 * mean - 1).tolist(),
        }

    # -- Tokens API ------------------------------------------------------------------------------
    def encode(self, x: Any, **kwargs: Any) -> Tokens:
        """Image(s) (B, 3, H, W) in [-1, 1], H, W <= image_size -> Tokens with latent (B, g, g, C).

        Smaller images are zero-padded at the bottom/right to the native square (the only size the
        decoder's positions cover); `original_size` records (H, W) so `decode` crops back.
        """
        if kwargs:
            raise InputError(f"uniflow encode takes no options; got {sorted(kwargs)}")
        x = self.prepare(x)
        height, width = (int(s) for s in x.shape[-2:])
        side = self.config.image_size
        if height > side or width > side:
            raise InputError(
                f"uniflow tokenizes images of at most {side}x{side} pixels (its native and only size); got "
                f"{height}x{width}. Resize first, e.g. modalities.image.prepare(src, size={side}) or "
                f"modalities.geometry.fit(x, size={side})"
            )
        x = F.pad(x, (0, side - width, 0, side - height))
        with torch.no_grad():
            latent = self.encode_latent(x)
        size = torch.tensor([[height, width]], dtype=torch.long).expand(x.shape[0], 2).clone()
        return self.make_tokens(None, latent=latent, grid=(self.grid, self.grid), original_size=size,
                                meta={"latent_channels": self.config.latent_channels})

    def decode(
        self,
        tokens: Tokens | Tensor,
        noise: Any = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        schedule: str | None = None,
        solver: str | None = None,
        cfg_scale: float | None = None,
        cfg_interval: tuple[float, float] | None = None,
        scheduler: Any = None,
        velocity_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Tokens (or a latent (B, g, g, C)) -> images (B, 3, H, W) in [-1, 1], cropped to the encoded size.

        `noise` (B, 3, S, S), in the normalised space and laid out like the image, makes the decode
        exact (`noise_from_upstream` converts upstream's draw); otherwise it is drawn from `generator`.
        `steps`/`schedule`/`solver` override the sampler (default: the config's single Euler step);
        `cfg_scale` != 1 adds guidance against a zero condition (upstream's null condition), only at
        flow times inside `cfg_interval` when given; `scheduler` samples through a diffusers
        flow-matching scheduler instead. `velocity_fn(x, t, cond)` replaces the flow head (e.g. an
        exported ONNX step).
        """
        if kwargs:
            raise InputError(
                "uniflow decode takes noise=, generator=, steps=, schedule=, solver=, cfg_scale=, cfg_interval=, "
                f"scheduler= and velocity_fn=; got {sorted(kwargs)}"
            )
        latent = self._latent_of(tokens)
        cfg = self.config
        b, side = latent.shape[0], cfg.image_size
        shape = (b, cfg.in_channels, side, side)
        if noise is None:
            noise = flow.draw_noise(shape, generator, dtype=self.dtype, device=self.device)
        else:
            noise = self._as_noise(noise, shape)
        scale = cfg.cfg_scale if cfg_scale is None else float(cfg_scale)
        step = velocity_fn or self.velocity
        with torch.no_grad():
            cond = self.condition(latent)
            null = torch.zeros_like(cond) if scale != 1.0 else None
            x = flow.sample(
                lambda x, t: step(x, t, cond),
                noise,
                cfg.sampling_steps if steps is None else steps,
                schedule=schedule or cfg.schedule,
                solver=solver or cfg.solver,
                cfg_scale=scale,
                uncond_fn=(lambda x, t: step(x, t, null)) if null is not None else None,
                cfg_interval=cfg_interval,
                scheduler=scheduler,
            )
            image = self.from_model_space(x)
        size = tokens.original_size if isinstance(tokens, Tokens) else None
        if size is not None:
            height, width = (int(v) for v in torch.as_tensor(size).reshape(-1, 2)[0])
            image = image[..., :height, :width]
        return image

    def embed(self, ids: Tokens | Tensor) -> Tensor:
        """The token vectors: a continuous tokenizer's latent (B, g, g, C) itself."""
        return self._latent_of(ids)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training step: conditional flow matching on the patch pixels (velocity = data - noise).

        Times are logit-normal (sigmoid of N(0, 1)); the layer-wise self-distillation loss needs the
        frozen teacher encoder, which is not part of this model.
        """
        x = self.prepare(x)
        self._check_native(x)
        target = self.to_model_space(x)
        latent = self.encode_latent(x)
        cond = self.condition(latent)
        noise = torch.randn_like(target)
        t = torch.sigmoid(torch.randn(target.shape[0], device=target.device, dtype=target.dtype))
        tt = t[:, None, None, None]
        x_t = (1 - tt) * noise + tt * target
        v = self.velocity(x_t, t, cond)
        loss = F.mse_loss(v, target - noise)
        estimate = self.from_model_space(x_t + (1 - tt) * v)
        return {"latent": latent, "reconstruction": estimate, "losses": {"flow_mse": loss}, "loss": loss}

    # -- upstream layouts ------------------------------------------------------------------------
    def tokens_to_upstream(self, tokens: Tokens) -> Tensor:
        """Upstream's `latent_tokens`: (B, N, C), N row-major over the patch grid."""
        latent = self._latent_of(tokens)
        return latent.reshape(latent.shape[0], -1, latent.shape[-1])

    def tokens_from_upstream(self, ids: Any, original_size: Any = None, **kwargs: Any) -> Tokens:
        """Tokens from upstream's latent (B, N, C) (or (N, C)), e.g. latents stored by upstream code."""
        if kwargs:
            raise InputError(f"tokens_from_upstream takes original_size= only; got {sorted(kwargs)}")
        t = _as_float_tensor(ids, "upstream latent")
        if t.dim() == 2:
            t = t.unsqueeze(0)
        n, c = self.grid * self.grid, self.config.latent_channels
        if t.dim() != 3 or tuple(t.shape[1:]) != (n, c):
            raise InputError(f"upstream UniFlow latents are laid out (B, {n}, {c}); got {tuple(t.shape)}")
        latent = t.reshape(t.shape[0], self.grid, self.grid, c).to(device=self.device, dtype=self.dtype)
        size = None if original_size is None else torch.as_tensor(original_size, dtype=torch.long).reshape(-1, 2)
        return self.make_tokens(None, latent=latent, grid=(self.grid, self.grid), original_size=size,
                                meta={"latent_channels": c})

    def noise_from_upstream(self, array: Any) -> Tensor:
        """Upstream's flow noise (B*N, C*p*p) or (B, N, C*p*p) (row b*N + n, column c*p*p + i*p + j)
        -> our image-shaped (B, C, S, S) noise."""
        t = _as_float_tensor(array, "noise")
        n, p = self.grid * self.grid, self.config.in_channels * self.config.patch_size**2
        if t.dim() == 2 and t.shape[1] == p and t.shape[0] % n == 0:
            t = t.reshape(-1, n, p)
        if t.dim() != 3 or tuple(t.shape[1:]) != (n, p):
            raise InputError(
                f"upstream UniFlow noise is laid out (B*{n}, {p}) or (B, {n}, {p}); got {tuple(t.shape)}"
            )
        return patches_to_image(t, (self.grid, self.grid), self.config.patch_size).contiguous()

    # -- helpers ---------------------------------------------------------------------------------
    def _check_native(self, x: Tensor) -> None:
        side = self.config.image_size
        if tuple(x.shape[-2:]) != (side, side):
            raise InputError(
                f"uniflow's encoder takes {side}x{side} images (its only size); got {tuple(x.shape[-2:])}. "
                "Use encode(), which pads smaller images, or resize first."
            )

    def _latent_of(self, tokens: Tokens | Tensor) -> Tensor:
        g, c = self.grid, self.config.latent_channels
        if isinstance(tokens, Tokens):
            if tokens.latent is None:
                raise InputError(
                    "these Tokens hold no latent; uniflow is a continuous tokenizer and decodes Tokens.latent "
                    f"(B, {g}, {g}, {c}) made by its encode()"
                )
            latent = tokens.latent
        else:
            latent = tokens
        latent = _as_float_tensor(latent, "uniflow latent")
        if latent.dim() == 3:
            latent = latent.unsqueeze(0)
        if latent.dim() != 4 or tuple(latent.shape[1:]) != (g, g, c):
            raise InputError(
                f"uniflow latents are laid out (B, {g}, {g}, {c}); got shape {tuple(latent.shape)}. For upstream's "
                f"(B, {g * g}, {c}) latents use tokens_from_upstream()."
            )
        if latent.numel() == 0 or not bool(torch.isfinite(latent).all()):
            raise InputError("uniflow latent is empty or contains NaN/Inf values")
        return latent.to(device=self.device, dtype=self.dtype)

    def _as_noise(self, noise: Any, shape: tuple[int, int, int, int]) -> Tensor:
        t = _as_float_tensor(noise, "noise")
        if tuple(t.shape) != shape:
            raise InputError(
                f"uniflow decoder noise must be laid out like the padded image (B, C, S, S) = {shape}; got "
                f"{tuple(t.shape)}. Convert upstream's (B*N, C*p*p) draw with noise_from_upstream()."
            )
        if not bool(torch.isfinite(t).all()):
            raise InputError("decoder noise contains NaN or Inf values")
        return t.to(device=self.device, dtype=self.dtype)


def _as_float_tensor(x: Any, what: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InputError(f"{what} must be a torch.Tensor or numpy array; got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{what} must be floating point; got {x.dtype}")
    return x


class _Graph(nn.Module):
    """One tensor method of the tokenizer as a module (what torch.onnx.export takes); named inputs, so
    export's `dynamic_shapes` can be given per input."""

    def __init__(self, tokenizer: UniFlowTokenizer, method: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.method = method
        self.training = tokenizer.training


class _EncodeGraph(_Graph):
    def forward(self, image: Tensor) -> Tensor:
        return self.tokenizer.encode_latent(image)


class _DecodeGraph(_Graph):
    def forward(self, latent: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.tokenizer.decode_ids(latent, noise)


class _ConditionGraph(_Graph):
    def forward(self, latent: Tensor) -> Tensor:
        return self.tokenizer.condition(latent)


class _VelocityGraph(_Graph):
    def forward(self, x: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        return self.tokenizer.velocity(x, t, condition)


# -- converter ---------------------------------------------------------------------------------------

# (upstream pattern, our template); {i} is a layer index.
_RENAMES: tuple[tuple[str, str], ...] = (
    ("embeddings.class_embedding", "encoder.cls_token"),
    ("embeddings.position_embedding", "encoder.pos_embed"),
    ("embeddings.patch_embedding.", "encoder.patch_embed."),
    ("encoder.layers.{i}.", "encoder.blocks.{i}."),
    ("chal_proj.c_fc.", "to_latent.fc."),
    ("chal_proj.c_proj.", "to_latent.proj."),
    ("chal_unproj.c_fc.", "decoder.from_latent.fc."),
    ("chal_unproj.c_proj.", "decoder.from_latent.proj."),
    ("global_block_pos_embed", "decoder.pos_embed"),
    ("global_blocks.{i}.", "decoder.blocks.{i}."),
    ("decoder_pos_embed", "decoder.head_pos_embed"),
    ("flow_head.net.time_embed.mlp.0.", "flow_head.time_embed.fc1."),
    ("flow_head.net.time_embed.mlp.2.", "flow_head.time_embed.fc2."),
    ("flow_head.net.cond_embed.", "flow_head.cond_embed."),
    ("flow_head.net.input_proj.", "flow_head.input_proj."),
    ("flow_head.net.res_blocks.{i}.in_ln.", "flow_head.blocks.{i}.norm."),
    ("flow_head.net.res_blocks.{i}.mlp.0.", "flow_head.blocks.{i}.fc1."),
    ("flow_head.net.res_blocks.{i}.mlp.2.", "flow_head.blocks.{i}.fc2."),
    ("flow_head.net.res_blocks.{i}.adaLN_modulation.1.", "flow_head.blocks.{i}.modulation."),
    ("flow_head.net.final_layer.adaLN_modulation.1.", "flow_head.final.modulation."),
    ("flow_head.net.final_layer.linear.", "flow_head.final.linear."),
)


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{i\}", template)
    return re.compile(r"(?P<i>\d+)".join(re.escape(p) for p in parts))


_FORWARD = tuple((_pattern(src), dst) for src, dst in _RENAMES)
_BACKWARD = tuple((_pattern(dst), src) for src, dst in _RENAMES)


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict()) + key[match.end():]
    return None


def our_key(upstream: str) -> str | None:
    """Upstream `UniFlowVisionModel` key -> ours (None when no rule maps it)."""
    return _rename(upstream, _FORWARD)


def upstream_key(ours: str) -> str:
    """Our key -> upstream's (to hand our weights to upstream code)."""
    return _rename(ours, _BACKWARD) or ours


def upstream_state_dict(tok: UniFlowTokenizer) -> dict[str, Tensor]:
    """Our weights under upstream's key names (loadable by upstream `UniFlowVisionModel.load_state_dict`)."""
    return {upstream_key(k): v for k, v in tok.state_dict().items()}


# upstream config key -> ours; other keys are checked or ignored below
_CONFIG_KEYS = {
    "image_size": "image_size",
    "patch_size": "patch_size",
    "num_channels": "in_channels",
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_heads",
    "num_hidden_layers": "num_layers",
    "intermediate_size": "intermediate_size",
    "layer_norm_eps": "layer_norm_eps",
    "qkv_bias": "qkv_bias",
    "latent_ch": "latent_channels",
    "global_blocks_depth": "global_blocks",
    "num_decoder_layers": "head_layers",
    "num_sampling_steps": "sampling_steps",
}
# what the published inference needs these to be (anything else is another architecture)
_REQUIRED = {
    "hidden_act": "gelu",
    "norm_type": "layer_norm",
    "qk_normalization": False,
    "use_chal_proj": True,
    "decoder_type": "mlp",
}
# accepted and not needed for inference (training switches, HF bookkeeping, flash-attn choice)
_IGNORED = {
    "architectures", "auto_map", "attention_dropout", "drop_path_rate", "dropout", "initializer_factor",
    "initializer_range", "model_type", "torch_dtype", "transformers_version", "use_flash_attn", "llm_hidden_size",
    "use_global_blocks", "use_cfg", "use_disp_loss", "vit_hidden_size",
}


def config_from_upstream(upstream_config: Any) -> dict[str, Any]:
    """Our config fields from upstream's config.json (`UniFlowVisionConfig`) dict."""
    if upstream_config is None:
        return {}
    if hasattr(upstream_config, "to_dict"):
        upstream_config = upstream_config.to_dict()
    if hasattr(upstream_config, "items") and not isinstance(upstream_config, dict):
        upstream_config = dict(upstream_config.items())
    if not isinstance(upstream_config, dict):
        raise ConfigError(f"uniflow upstream config must be a mapping (config.json), got {type(upstream_config)}")
    unknown = set(upstream_config) - set(_CONFIG_KEYS) - set(_REQUIRED) - _IGNORED
    if unknown:
        raise ConfigError(
            f"uniflow config.json has unknown key(s) {sorted(unknown)}; this converter knows UniFlowVisionConfig "
            f"as published ({sorted(set(_CONFIG_KEYS) | set(_REQUIRED))})"
        )
    for key, wanted in _REQUIRED.items():
        if key in upstream_config and upstream_config[key] != wanted:
            raise ConfigError(
                f"uniflow: config.json sets {key}={upstream_config[key]!r}; the published UniFlow architecture "
                f"(and this family) uses {key}={wanted!r}"
            )
    vit = upstream_config.get("vit_hidden_size")
    if vit is not None and vit != upstream_config.get("hidden_size", vit):
        raise ConfigError(
            f"uniflow: vit_hidden_size {vit} differs from hidden_size {upstream_config['hidden_size']}; upstream's "
            "bottleneck reads the encoder output, so they must be equal"
        )
    out = {ours: upstream_config[up] for up, ours in _CONFIG_KEYS.items() if up in upstream_config}
    if "sampling_steps" in out:
        out["sampling_steps"] = int(out["sampling_steps"])
    if "hidden_size" in out:  # upstream ties the head width and global heads to these
        out["head_width"] = out["hidden_size"]
    return out


def _config_from_shapes(state: dict[str, Tensor]) -> dict[str, Any]:
    """Every size the weights imply (upstream hard-codes some: MLP ratio 4, 256 time frequencies)."""
    try:
        patch = state["embeddings.patch_embedding.weight"]
        pos = state["embeddings.position_embedding"]
        latent = state["chal_proj.c_proj.weight"]
        head_in = state["flow_head.net.input_proj.weight"]
    except KeyError as exc:
        raise CheckpointError(
            f"not a UniFlow state dict: no {exc.args[0]!r}; expected upstream UniFlowVisionModel keys "
            "(embeddings.*, encoder.layers.*, chal_proj.*, global_blocks.*, flow_head.net.*)"
        ) from None
    grid = math.isqrt(int(pos.shape[1]) - 1)
    p = int(patch.shape[-1])

    def count(prefix: str) -> int:
        return len({m.group(1) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})

    out = {
        "hidden_size": int(patch.shape[0]),
        "in_channels": int(patch.shape[1]),
        "patch_size": p,
        "image_size": grid * p,
        "num_layers": count("encoder.layers."),
        "intermediate_size": int(state["encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "latent_channels": int(latent.shape[0]),
        "global_blocks": count("global_blocks."),
        "head_width": int(head_in.shape[0]),
        "head_layers": count("flow_head.net.res_blocks."),
    }
    time_fc = state.get("flow_head.net.time_embed.mlp.0.weight")
    if time_fc is not None:
        out["time_frequencies"] = int(time_fc.shape[1])
    global_fc = state.get("global_blocks.0.mlp.fc1.weight")
    if global_fc is not None:
        out["global_mlp_ratio"] = int(global_fc.shape[0]) / out["hidden_size"]
    return out


def convert_uniflow(
    state_dict: dict[str, Tensor],
    upstream_config: Any = None,
    drop_prefixes: tuple[str, ...] = (),
    **overrides: Any,
) -> UniFlowTokenizer:
    """Upstream `UniFlowVisionModel` weights (+ its config.json) -> `UniFlowTokenizer`.

    Takes the flat state dict of model.safetensors (or a dict holding it under `state_dict`/`model`) and
    empties it while converting (pass a copy to keep it), so bfloat16 and float32 copies never pile up.
    Casts to float32 and loads strictly: a key no rule maps is an error naming it (the official notebook
    loads with strict=False; pass `drop_prefixes=("name.",)` to drop extras you have checked are unused).
    Sizes come from the weights and must agree with the config; head counts come from the config (16
    upstream). `overrides` set our config fields (e.g. sampling_steps).
    """
    from registry.config import model_config

    for container in ("state_dict", "model"):
        if isinstance(state_dict.get(container), dict):
            state_dict = state_dict[container]
    state = state_dict
    for key in [k for k in state if k.startswith(tuple(drop_prefixes))]:
        del state[key]
    inferred = _config_from_shapes(state)
    given = config_from_upstream(upstream_config)
    clash = {k: (given[k], inferred[k]) for k in inferred if k in given and given[k] != inferred[k]}
    if clash:
        detail = ", ".join(f"{k}: config {a} vs weights {b}" for k, (a, b) in clash.items())
        raise CheckpointError(f"uniflow: config.json does not describe these weights ({detail})")
    config = model_config(UniFlowConfig, {**inferred, **given}, overrides, where="uniflow converter")
    ours: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key in list(state):
        value = state.pop(key)
        name = our_key(key)
        if name is None:
            unmapped.append(key)
            continue
        ours[name] = value.float() if value.is_floating_point() else value
    if unmapped:
        raise CheckpointError(
            f"uniflow: {len(unmapped)} upstream key(s) map to nothing in this model: {', '.join(unmapped[:8])}. "
            "If they belong to training-only modules, drop them with convert_uniflow(..., drop_prefixes=(...))."
        )
    with torch.device("meta"):
        tok = UniFlowTokenizer(config)
    load_state_strict(tok, ours, "uniflow upstream checkpoint", assign=True)
    # non-persistent buffers were built on the meta device: rebuild them on the CPU
    shape = (1, config.in_channels, 1, 1)
    tok.pixel_mean = torch.tensor(config.pixel_mean).reshape(shape)
    tok.pixel_std = torch.tensor(config.pixel_std).reshape(shape)
    tok.eval()
    return tok


register_tokenizer(UniFlowTokenizer, variants=("uniflow-internvit300m-448", "uniflow-tiny"))
register_converter("uniflow", convert_uniflow)

"""The Vocos decoder backbone (ConvNeXt blocks, optional AdaLayerNorm) and WavTokenizer's `pos_net`.

Vocos (arXiv 2306.00814) maps a feature sequence (B, C, T) to frame embeddings (B, T, dim) that an
ISTFT head (`zoo.layers.spectral.ISTFTHead`) turns into audio. WavTokenizer adds `pos_net` in front of
the ConvNeXt stack: two ResNet blocks, one single-head self-attention block over all frames, two more
ResNet blocks and a GroupNorm. Submodule names follow upstream Vocos/WavTokenizer, so a converter maps
an upstream `backbone.*` state dict by stripping the prefix.

Conditioning: with `adanorm_num_embeddings` set, every LayerNorm is an AdaLayerNorm whose scale and
shift rows are picked by a condition id (WavTokenizer's `bandwidth_id`, always 0 at inference).

Ragged batches: `forward(x, cond, lengths)` gives each item what it gets alone (up to float rounding):
inputs of every conv are zeroed past the item's end (its zero padding), GroupNorm statistics and the
attention keys cover only its own frames. Frames past an item's end hold unspecified values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers.attention import MaskSpec, attention

Cond = Tensor | int | None


@dataclass
class VocosBackboneConfig:
    """Hyperparameters of `VocosBackbone` (defaults: WavTokenizer's published backbone)."""

    input_channels: int = 512
    dim: int = 768
    intermediate_dim: int = 2304
    num_layers: int = 12
    layer_scale_init_value: float | None = None
    adanorm_num_embeddings: int | None = 4
    pos_net: bool = True
    pos_net_groups: int = 32
    pos_net_dropout: float = 0.1
    embed_kernel_size: int = 7
    eps: float = 1e-6


def _rows(table: nn.Embedding, cond: Tensor | int) -> Tensor:
    """Embedding rows for a condition id given as an int, a (1,) or a (B,) tensor -> (B or 1, 1, dim)."""
    if isinstance(cond, int):
        return table.weight[cond].view(1, 1, -1)
    return table(cond.reshape(-1).long()).unsqueeze(1)


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine weights, then a per-condition scale and shift (Vocos)."""

    def __init__(self, num_embeddings: int, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, cond: Tensor | int) -> Tensor:
        x = F.layer_norm(x, (self.dim,), eps=self.eps)
        return x * _rows(self.scale, cond) + _rows(self.shift, cond)


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block: depthwise conv k7, (Ada)LayerNorm, Linear-GELU-Linear, layer scale, residual.

    (B, C, T) in and out. `adanorm_num_embeddings=None` uses a plain LayerNorm (the condition is ignored).
    """

    def __init__(
        self,
        dim: int,
        intermediate_dim: int,
        layer_scale_init_value: float | None = None,
        adanorm_num_embeddings: int | None = None,
        kernel_size: int = 7,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.adanorm = adanorm_num_embeddings is not None
        self.norm: nn.Module = (
            AdaLayerNorm(adanorm_num_embeddings, dim, eps) if adanorm_num_embeddings else nn.LayerNorm(dim, eps=eps)
        )
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        scale = layer_scale_init_value
        self.gamma = nn.Parameter(scale * torch.ones(dim)) if scale is not None and scale > 0 else None

    def forward(self, x: Tensor, cond: Cond = None, mask: Tensor | None = None) -> Tensor:
        residual = x
        x = self.dwconv(_zero_past_end(x, mask)).transpose(1, 2)
        x = self.norm(x, 0 if cond is None else cond) if self.adanorm else self.norm(x)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        if self.gamma is not None:
            x = self.gamma * x
        return residual + x.transpose(1, 2)


def _group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


def frame_mask(lengths: Tensor, frames: int) -> Tensor:
    """(B,) valid frame counts -> (B, 1, frames) float mask."""
    steps = torch.arange(frames, device=lengths.device)
    return (steps.unsqueeze(0) < lengths.reshape(-1, 1)).unsqueeze(1).float()


def group_norm(norm: nn.GroupNorm, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """`norm(x)` on (B, C, T), with statistics over the frames where `mask` (B, 1, T) is 1 when given."""
    if mask is None:
        return norm(x)
    batch, channels, frames = x.shape
    groups = norm.num_groups
    m = mask.to(x.dtype).unsqueeze(1)
    xg = x.reshape(batch, groups, channels // groups, frames)
    count = m.sum(-1, keepdim=True) * (channels // groups)
    mean = (xg * m).sum((2, 3), keepdim=True) / count
    var = ((xg - mean).square() * m).sum((2, 3), keepdim=True) / count
    y = ((xg - mean) * torch.rsqrt(var + norm.eps)).reshape(batch, channels, frames)
    if norm.affine:
        y = y * norm.weight.unsqueeze(-1) + norm.bias.unsqueeze(-1)
    return y


def _zero_past_end(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv3, twice, plus the input (the taming-transformers block, 1-D, no time embedding)."""

    def __init__(self, channels: int, dropout: float = 0.0, groups: int = 32) -> None:
        super().__init__()
        self.norm1 = _group_norm(channels, groups)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = _group_norm(channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.conv1(_zero_past_end(F.silu(group_norm(self.norm1, x, mask)), mask))
        h = self.conv2(_zero_past_end(self.dropout(F.silu(group_norm(self.norm2, h, mask))), mask))
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all frames with 1x1-conv projections, plus the input.

    Scores are scaled by channels ** -0.5 as upstream; computed by the shared attention backend.
    """

    def __init__(self, channels: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = _group_norm(channels, groups)
        self.q = nn.Conv1d(channels, channels, 1)
        self.k = nn.Conv1d(channels, channels, 1)
        self.v = nn.Conv1d(channels, channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
        h = group_norm(self.norm, x, mask)
        q, k, v = (proj(h).transpose(1, 2).unsqueeze(1) for proj in (self.q, self.k, self.v))
        keys = None if lengths is None else MaskSpec.key_padding(lengths)
        out = attention(q, k, v, mask=keys, scale=x.shape[1] ** -0.5)
        return x + self.proj_out(out.squeeze(1).transpose(1, 2))


def pos_net(channels: int, dropout: float = 0.1, groups: int = 32) -> nn.Sequential:
    """WavTokenizer's positional network; indices 0..5 match upstream `backbone.pos_net.*` keys."""
    return nn.Sequential(
        ResnetBlock(channels, dropout, groups),
        ResnetBlock(channels, dropout, groups),
        AttnBlock(channels, groups),
        ResnetBlock(channels, dropout, groups),
        ResnetBlock(channels, dropout, groups),
        _group_norm(channels, groups),
    )


class VocosBackbone(nn.Module):
    """Features (B, input_channels, T) -> frame embeddings (B, T, dim).

    embed conv -> [pos_net] -> (Ada)LayerNorm -> ConvNeXt blocks -> final LayerNorm.
    """

    def __init__(self, config: VocosBackboneConfig | None = None) -> None:
        super().__init__()
        cfg = config or VocosBackboneConfig()
        self.config = cfg
        k = cfg.embed_kernel_size
        self.embed = nn.Conv1d(cfg.input_channels, cfg.dim, k, padding=k // 2)
        self.adanorm = cfg.adanorm_num_embeddings is not None
        self.norm: nn.Module = (
            AdaLayerNorm(cfg.adanorm_num_embeddings, cfg.dim, cfg.eps)
            if cfg.adanorm_num_embeddings
            else nn.LayerNorm(cfg.dim, eps=cfg.eps)
        )
        scale = cfg.layer_scale_init_value or 1.0 / cfg.num_layers
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, scale, cfg.adanorm_num_embeddings, eps=cfg.eps)
            for _ in range(cfg.num_layers)
        )
        self.final_layer_norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.apply(_init_weights)
        # Created after the init pass, as upstream does, so pos_net keeps PyTorch's default init.
        self.pos_net = pos_net(cfg.dim, cfg.pos_net_dropout, cfg.pos_net_groups) if cfg.pos_net else None

    def forward(self, x: Tensor, cond: Cond = None, lengths: Tensor | None = None) -> Tensor:
        """(B, input_channels, T) -> (B, T, dim); `lengths` (B,) valid frames per item of a ragged batch."""
        cond = 0 if cond is None else cond
        mask = None if lengths is None else frame_mask(lengths, x.shape[-1]).to(x.dtype)
        x = self.embed(_zero_past_end(x, mask))
        if self.pos_net is not None:
            x = self._pos_net(x, mask, lengths)
        x = x.transpose(1, 2)
        x = self.norm(x, cond) if self.adanorm else self.norm(x)
        x = x.transpose(1, 2)
        for block in self.convnext:
            x = block(x, cond, mask)
        return self.final_layer_norm(x.transpose(1, 2))

    def _pos_net(self, x: Tensor, mask: Tensor | None, lengths: Tensor | None) -> Tensor:
        assert self.pos_net is not None
        if mask is None:
            return self.pos_net(x)
        for layer in self.pos_net:
            if isinstance(layer, ResnetBlock):
                x = layer(x, mask)
            elif isinstance(layer, AttnBlock):
                x = layer(x, mask, lengths)
            else:
                x = group_norm(layer, x, mask)
        return x


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv1d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


__all__ = [
    "AdaLayerNorm",
    "AttnBlock",
    "ConvNeXtBlock",
    "ResnetBlock",
    "VocosBackbone",
    "VocosBackboneConfig",
    "frame_mask",
    "group_norm",
    "pos_net",
]

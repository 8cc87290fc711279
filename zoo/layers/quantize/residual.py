"""Several codebooks per token: residual VQ (coarse to fine, first-N decoding) and group VQ."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from registry.errors import ConfigError, InputError
from zoo.layers.quantize.base import Quantizer, QuantizerOutput, check_ids, check_latents
from zoo.layers.quantize.usage import CodebookUsage
from zoo.layers.quantize.vq import VectorQuantizer


def mean_losses(per_layer: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Average each named loss over the layers that report it."""
    names = {name for losses in per_layer for name in losses}
    out: dict[str, Tensor] = {}
    for name in sorted(names):
        values = [losses[name] for losses in per_layer if name in losses]
        out[name] = torch.stack(values).mean()
    return out


class ResidualVQ(Quantizer):
    """`num_quantizers` VectorQuantizers in `layers`, each quantizing what the previous ones left.

    ids are int64 (..., n_q), codebook axis last, coarse first. `encode(z, num_quantizers=n)` keeps the
    first n codebooks (variable bitrate) and `decode(ids)` sums the first `ids.shape[-1]` codebooks.
    Extra keyword arguments go to every `VectorQuantizer`. `quantizer_dropout` is the probability that
    a training batch uses a random number of codebooks (SoundStream-style bitrate dropout).
    """

    def __init__(
        self,
        num_quantizers: int,
        codebook_size: int,
        dim: int,
        quantizer_dropout: float = 0.0,
        **vq_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ConfigError(f"num_quantizers must be >= 1; got {num_quantizers}.")
        self.num_quantizers = int(num_quantizers)
        self.codebook_size = int(codebook_size)
        self.dim = int(dim)
        self.quantizer_dropout = float(quantizer_dropout)
        self.layers = nn.ModuleList(
            VectorQuantizer(codebook_size, dim, **vq_kwargs) for _ in range(num_quantizers)
        )

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.num_quantizers

    def _depth(self, num_quantizers: int | None) -> int:
        n = self.num_quantizers if num_quantizers is None else int(num_quantizers)
        if not 1 <= n <= self.num_quantizers:
            raise ConfigError(f"num_quantizers must lie in [1, {self.num_quantizers}]; got {num_quantizers}.")
        return n

    def encode(self, z: Tensor, num_quantizers: int | None = None) -> Tensor:
        """Latents (..., dim) -> int64 ids (..., n_q)."""
        check_latents(z, self.dim)
        residual = z
        ids = []
        for layer in self.layers[: self._depth(num_quantizers)]:
            layer_ids = layer.search(layer.search_input(residual))
            residual = residual - layer.lookup(layer_ids)
            ids.append(layer_ids)
        return torch.stack(ids, dim=-1)

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (..., n) with n <= num_quantizers -> sum of the first n code vectors (..., dim)."""
        check_ids(ids, self.codebook_sizes, codebook_axis=True)
        out = self.layers[0].lookup(ids[..., 0])
        for i in range(1, ids.shape[-1]):
            out = out + self.layers[i].lookup(ids[..., i])
        return out

    def forward(self, z: Tensor, num_quantizers: int | None = None) -> QuantizerOutput:
        check_latents(z, self.dim)
        depth = self._depth(num_quantizers)
        if self.training and self.quantizer_dropout > 0 and random.random() < self.quantizer_dropout:
            depth = random.randint(1, depth)
        return residual_forward(self.layers[:depth], z, self.codebook_size)


def residual_forward(layers: Iterable[Quantizer], z: Tensor, codebook_size: int) -> QuantizerOutput:
    """Quantize `z` with each layer in turn on what the previous ones left; ids stacked on the last axis."""
    residual = z
    quantized: Tensor | None = None
    ids, losses = [], []
    for layer in layers:
        out = layer(residual)
        residual = residual - out.quantized
        quantized = out.quantized if quantized is None else quantized + out.quantized
        ids.append(out.ids)
        losses.append(out.losses)
    if quantized is None:
        raise InputError("a residual quantizer needs at least one layer (num_quantizers >= 1)")
    stacked = torch.stack(ids, dim=-1)
    usage = CodebookUsage.from_ids(stacked, codebook_size, codebook_axis=True) if stacked.numel() else None
    return QuantizerOutput(quantized=quantized, ids=stacked, losses=mean_losses(losses), usage=usage)


class GroupVQ(Quantizer):
    """Split the channels into `groups` equal parts, each with its own codebook (in `layers`).

    ids are int64 (..., groups), one id per group in channel order; `decode` concatenates the groups'
    code vectors back to (..., dim).
    """

    def __init__(self, groups: int, codebook_size: int, dim: int, **vq_kwargs: Any) -> None:
        super().__init__()
        if groups < 1 or dim % groups:
            raise ConfigError(f"dim ({dim}) must split into `groups` ({groups}) equal parts.")
        self.groups = int(groups)
        self.codebook_size = int(codebook_size)
        self.dim = int(dim)
        self.group_dim = dim // groups
        self.layers = nn.ModuleList(
            VectorQuantizer(codebook_size, self.group_dim, **vq_kwargs) for _ in range(groups)
        )

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.groups

    def encode(self, z: Tensor) -> Tensor:
        """Latents (..., dim) -> int64 ids (..., groups)."""
        check_latents(z, self.dim)
        parts = z.split(self.group_dim, dim=-1)
        ids = [layer.search(layer.search_input(p)) for layer, p in zip(self.layers, parts, strict=True)]
        return torch.stack(ids, dim=-1)

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (..., groups) -> code vectors (..., dim)."""
        check_ids(ids, self.codebook_sizes, codebook_axis=True)
        if ids.shape[-1] != self.groups:
            raise InputError(
                f"ids must have shape (..., {self.groups}) (one id per group); got {tuple(ids.shape)}."
            )
        return torch.cat([layer.lookup(ids[..., i]) for i, layer in enumerate(self.layers)], dim=-1)

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_latents(z, self.dim)
        outs = [layer(p) for layer, p in zip(self.layers, z.split(self.group_dim, dim=-1), strict=True)]
        ids = torch.stack([o.ids for o in outs], dim=-1)
        usage = CodebookUsage.from_ids(ids, self.codebook_size, codebook_axis=True) if ids.numel() else None
        quantized = torch.cat([o.quantized for o in outs], dim=-1)
        return QuantizerOutput(
            quantized=quantized, ids=ids, losses=mean_losses([o.losses for o in outs]), usage=usage
        )

"""Finite scalar quantization (Mentzer et al., 2023): bound each channel, round it, read the digits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from registry.errors import ConfigError
from zoo.layers.quantize.base import (
    Quantizer,
    QuantizerOutput,
    check_ids,
    check_latents,
    place_value_dtype,
    place_value_sum,
)
from zoo.layers.quantize.usage import usage_or_none

Bound = Literal["paper", "atanh", "scaled_tanh"]
DigitOrder = Literal["first_least", "first_most"]


class FSQ(Quantizer):
    """Channel i of z (..., len(levels)) is rounded to one of `levels[i]` values; ids are int64 (...).

    bound (how z is squashed before rounding, per channel with L levels):
      * "paper": the FSQ paper's reference code, tanh(z + tan(o / h)) * h - o with
        h = (L - 1)(1 - eps)/2 and o = 0.5 for even L else 0.
      * "atanh": vector-quantize-pytorch / Cosmos, h = (L - 1)(1 + eps)/2 and shift atanh(o / h).
      * "scaled_tanh": S3Tokenizer v2, tanh(z) * tanh_scale * (L // 2) (odd L only); S3Tokenizer v2
        is levels=[3]*8, tanh_scale=0.9990000128746033.
    Codes are round(bounded) / (L // 2), so in [-1, 1]. The digit of channel i is round(bounded) + L // 2
    and the id is sum(digit_i * basis_i): with digit_order "first_least" (the paper, vector-quantize-
    pytorch and S3Tokenizer v2: powers L^i) channel 0 is the least significant digit; "first_most"
    reverses that.
    """

    def __init__(
        self,
        levels: Sequence[int],
        eps: float = 1e-3,
        bound: Bound = "paper",
        tanh_scale: float = 1.0,
        digit_order: DigitOrder = "first_least",
    ) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or min(levels) < 2:
            raise ConfigError(f"levels must be a non-empty list of integers >= 2; got {levels}.")
        if bound not in ("paper", "atanh", "scaled_tanh"):
            raise ConfigError(f"bound must be 'paper', 'atanh' or 'scaled_tanh'; got {bound!r}.")
        if bound == "scaled_tanh" and any(v % 2 == 0 for v in levels):
            raise ConfigError(f"bound='scaled_tanh' needs odd levels (symmetric around 0); got {levels}.")
        if digit_order not in ("first_least", "first_most"):
            raise ConfigError(f"digit_order must be 'first_least' or 'first_most'; got {digit_order!r}.")
        self.levels = tuple(levels)
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        if self.codebook_size >= 2**53:
            raise ConfigError(f"prod(levels) = {self.codebook_size} is too large: ids must stay below 2^53.")
        self.eps = eps
        self.bound_kind: Bound = bound
        self.tanh_scale = tanh_scale
        self.digit_order: DigitOrder = digit_order

        weights = [1]
        for size in levels[:-1] if digit_order == "first_least" else levels[:0:-1]:
            weights.append(weights[-1] * size)
        if digit_order == "first_most":
            weights.reverse()
        level_t = torch.tensor(levels, dtype=torch.float64)
        half_width = torch.div(level_t, 2, rounding_mode="floor")
        offset = torch.where(level_t % 2 == 0, 0.5, 0.0)
        if bound == "paper":
            half_l = (level_t - 1) * (1 - eps) / 2
            shift = torch.tan(offset / half_l)
        elif bound == "atanh":
            half_l = (level_t - 1) * (1 + eps) / 2
            shift = torch.atanh(offset / half_l)
        else:
            half_l = half_width * tanh_scale
            shift = torch.zeros_like(level_t)
        self.register_buffer("basis", torch.tensor(weights, dtype=torch.long), persistent=False)
        value_dtype = place_value_dtype(self.codebook_size - 1)
        self.register_buffer("place_values", torch.tensor(weights, dtype=value_dtype), persistent=False)
        self.register_buffer("level_counts", torch.tensor(levels, dtype=torch.long), persistent=False)
        self.register_buffer("half_width", half_width.float(), persistent=False)
        self.register_buffer("half_width_long", half_width.long(), persistent=False)
        self.register_buffer("half_l", half_l.float(), persistent=False)
        self.register_buffer("offset", offset.float(), persistent=False)
        self.register_buffer("shift", shift.float(), persistent=False)

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}, bound={self.bound_kind!r}, digit_order={self.digit_order!r}"

    def bound(self, z: Tensor) -> Tensor:
        """Squash z so that rounding lands on one of the L levels (centred on 0)."""
        if self.bound_kind == "scaled_tanh":
            return torch.tanh(z) * self.half_l
        return torch.tanh(z + self.shift) * self.half_l - self.offset

    def _rounded(self, z: Tensor) -> Tensor:
        x = z if z.dtype in (torch.float32, torch.float64) else z.float()
        return torch.round(self.bound(x))

    def _ids_from_rounded(self, rounded: Tensor) -> Tensor:
        return place_value_sum(rounded + self.half_width.to(rounded.dtype), self.place_values)

    def encode(self, z: Tensor) -> Tensor:
        """Latents (..., len(levels)) -> int64 ids (...) in [0, prod(levels))."""
        check_latents(z, self.dim)
        return self._ids_from_rounded(self._rounded(z))

    def decode(self, ids: Tensor) -> Tensor:
        """Integer ids (...) -> codes (..., len(levels)) in [-1, 1]."""
        check_ids(ids, self.codebook_size)
        digits = self._digits(ids)
        return (digits - self.half_width_long).to(self.half_width.dtype) / self.half_width

    def digits(self, ids: Tensor) -> Tensor:
        """Per-channel level indices (..., len(levels)) in [0, L) of ids (...)."""
        check_ids(ids, self.codebook_size)
        return self._digits(ids)

    def _digits(self, ids: Tensor) -> Tensor:
        # In float64, explicitly: exact for ids < 2^53, where ONNX exporters would turn an integer
        # floor division into a float32 one.
        place = torch.floor(ids.unsqueeze(-1).double() / self.basis.double())
        return torch.remainder(place, self.level_counts.double()).long()

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_latents(z, self.dim)
        x = z if z.dtype in (torch.float32, torch.float64) else z.float()
        bounded = self.bound(x)
        rounded = torch.round(bounded)
        ids = self._ids_from_rounded(rounded)
        if self.training:
            quantized = (bounded + (rounded - bounded).detach()) / self.half_width
        else:
            quantized = rounded / self.half_width
        return QuantizerOutput(
            quantized=quantized, ids=ids, losses={}, usage=usage_or_none(ids, self.codebook_size)
        )

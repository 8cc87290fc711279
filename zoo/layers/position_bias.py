"""Additive relative position biases for `attention(..., bias=...)`.

Families keep their learned tables (and upstream key names) themselves; this module builds the index and
distance tensors those tables are read with, so every family computes them the same way:
Swin-style window tables (OmniTokenizer's window blocks), ALiBi slopes and distances (its causal temporal
blocks), and the signed log-distance coordinates fed to a continuous position bias MLP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from registry.errors import InputError


def window_relative_index(window: int | Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """`(wh*ww, wh*ww)` indices into a `((2wh-1) * (2ww-1), heads)` table, Swin's layout.

    The pair (query `(y1, x1)`, key `(y2, x2)`) reads row `(y1 - y2 + wh - 1) * (2ww - 1) + x1 - x2 + ww - 1`;
    the bias is then `table[index].permute(2, 0, 1)`, a `(heads, n, n)` per-window bias.
    """
    wh, ww = (window, window) if isinstance(window, int) else tuple(window)
    if wh < 1 or ww < 1:
        raise InputError(f"window_relative_index: expected a positive window, got {window!r}.")
    ys, xs = torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + wh - 1
    dx = xs[:, None] - xs[None, :] + ww - 1
    return dy * (2 * ww - 1) + dx


def window_bias(table: Tensor, window: int | Sequence[int]) -> Tensor:
    """Read a `((2wh-1)(2ww-1), heads)` table into the `(heads, n, n)` bias of one window."""
    index = window_relative_index(window, table.device)
    if table.dim() != 2 or table.shape[0] <= int(index.max()):
        raise InputError(
            f"window_bias: expected a table of shape ({int(index.max()) + 1}, heads) for window {window}, "
            f"got {tuple(table.shape)}."
        )
    return table[index].permute(2, 0, 1)


def alibi_slopes(heads: int) -> Tensor:
    """ALiBi's per-head slopes (Press et al.), with the paper's rule for head counts not a power of 2."""
    if heads < 1:
        raise InputError(f"alibi_slopes: expected heads >= 1, got {heads}.")

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        slopes = power_of_two(heads)
    else:
        closest = 2 ** math.floor(math.log2(heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: Tensor, lq: int, lk: int) -> Tensor:
    """`(heads, Lq, Lk)` bias `-slope * |j - p|`, queries aligned bottom-right (`p = i + Lk - Lq`)."""
    pos = torch.arange(lk - lq, lk, device=slopes.device)
    keys = torch.arange(lk, device=slopes.device)
    distance = -(keys[None, :] - pos[:, None]).abs().to(slopes.dtype)
    return slopes[:, None, None] * distance


def relative_coordinates(
    *sizes: int, log_scale: bool = False, device: torch.device | str | None = None
) -> Tensor:
    """`(N, N, A)` signed offsets `query - key` between all cells of a row-major grid of `sizes`.

    With `log_scale`, offsets become `sign(d) * log(|d| + 1)` (Swin V2's continuous position bias).
    """
    axes = [torch.arange(size, device=device) for size in sizes]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))
    offsets = (coords[:, None, :] - coords[None, :, :]).float()
    if log_scale:
        offsets = torch.sign(offsets) * torch.log(offsets.abs() + 1)
    return offsets

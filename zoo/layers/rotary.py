"""Rotary position embeddings (RoPE): 1-D, and axial over 2-D / 3-D token grids.

Tables are `(cos, sin)` with one angle per rotated *pair* of channels, shape `(..., L, R/2)`; they
broadcast against `x` of shape `(..., L, D)` (so `(B, H, L, D)` takes `(L, R/2)` as it is, and
`(B, L, H, D)` takes `cos[:, None]`). The first `R` channels are rotated, the rest pass through.

Two pairings exist upstream, and `apply_rotary(..., interleaved=...)` picks one:
* half rotation (`interleaved=False`, GPT-NeoX / Hugging Face LLaMA): channel `i` pairs with `i + R/2`;
* interleaved (`interleaved=True`, the RoFormer paper, Meta's LLaMA, OmniTokenizer's complex view):
  channel `2i` pairs with `2i + 1`.
Frequencies follow the usual `theta ** (-2i / dim)`; axial tables give each axis its own slice of
channels with its own 1-D frequencies, either one axis after the other (`layout="split"`) or
alternating pair by pair (`layout="interleaved"`, OmniTokenizer's 2-D table with x before y).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from registry.errors import InputError


def rope_inv_freq(dim: int, theta: float = 10000.0, device: torch.device | str | None = None) -> Tensor:
    """`(dim/2,)` inverse frequencies `theta ** (-2i / dim)` of a `dim`-channel rotary embedding."""
    if dim < 2 or dim % 2:
        raise InputError(f"rotary: expected an even number of rotated channels >= 2, got dim={dim}.")
    # float32 throughout, as the upstream models compute it, so tables match theirs bit for bit
    return 1.0 / theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.int64).float() / dim)


def rope_1d(
    positions: int | Tensor,
    dim: int,
    theta: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """`(cos, sin)` of shape `(..., L, dim/2)` for integer or fractional `positions` (or `arange(L)`)."""
    pos = _positions(positions, device)
    angles = pos[..., None] * rope_inv_freq(dim, theta, pos.device)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope_axial(
    positions: Tensor,
    dim: int,
    theta: float = 10000.0,
    axis_dims: Sequence[int] | None = None,
    layout: str = "split",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Axial RoPE for `positions` of shape `(..., L, A)` (one coordinate per axis) over `dim` channels.

    Axis `a` gets `axis_dims[a]` channels (default: `dim / A` each) and the 1-D frequencies of that many
    channels. `layout="split"` puts the axes' pairs one after another; `"interleaved"` alternates them
    (needs equal `axis_dims`).
    """
    if positions.dim() < 2:
        raise InputError(
            f"rope_axial: expected positions (..., L, axes), got shape {tuple(positions.shape)}."
        )
    axes = positions.shape[-1]
    sizes = tuple(axis_dims) if axis_dims is not None else (dim // axes,) * axes
    if len(sizes) != axes or sum(sizes) != dim or any(size % 2 for size in sizes):
        raise InputError(
            f"rope_axial: expected {axes} even channel counts summing to dim={dim}, got {sizes}; "
            "choose a dim "
            f"divisible by {2 * axes} or pass axis_dims."
        )
    if layout not in ("split", "interleaved"):
        raise InputError(f"rope_axial: expected layout 'split' or 'interleaved', got {layout!r}.")
    pos = positions.to(torch.float32)
    angles = [pos[..., a, None] * rope_inv_freq(size, theta, pos.device) for a, size in enumerate(sizes)]
    if layout == "split":
        table = torch.cat(angles, dim=-1)
    else:
        if len(set(sizes)) != 1:
            raise InputError(f"rope_axial: layout='interleaved' needs equal axis_dims, got {sizes}.")
        table = torch.stack(angles, dim=-1).flatten(-2)
    return table.cos().to(dtype), table.sin().to(dtype)


def grid_positions(*sizes: int, device: torch.device | str | None = None) -> Tensor:
    """`(prod(sizes), len(sizes))` integer coordinates of a row-major grid (e.g. `(H, W)` -> `(y, x)`)."""
    axes = [torch.arange(size, device=device) for size in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))


def rope_2d(
    height: int,
    width: int,
    dim: int,
    theta: float = 10000.0,
    order: str = "yx",
    layout: str = "split",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Axial RoPE over a row-major `(height, width)` grid: `(cos, sin)` of shape `(H*W, dim/2)`.

    `order` says which axis comes first in the table (`"yx"`: rows then columns; OmniTokenizer uses
    `"xy"` with `layout="interleaved"`).
    """
    if order not in ("yx", "xy"):
        raise InputError(f"rope_2d: expected order 'yx' or 'xy', got {order!r}.")
    coords = grid_positions(height, width, device=device)
    if order == "xy":
        coords = coords.flip(-1)
    return rope_axial(coords, dim, theta, layout=layout, dtype=dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool) -> Tensor:
    """Rotate the first `2 * cos.shape[-1]` channels of `x` by the table's angles (see module doc)."""
    if cos.shape != sin.shape:
        raise InputError(
            f"apply_rotary: cos and sin differ in shape: {tuple(cos.shape)} vs {tuple(sin.shape)}."
        )
    rotated = 2 * cos.shape[-1]
    if rotated > x.shape[-1]:
        raise InputError(
            f"apply_rotary: the table rotates {rotated} channels but x has only {x.shape[-1]} "
            f"(x shape {tuple(x.shape)}, table {tuple(cos.shape)}); build the table for dim <= head_dim."
        )
    work = torch.promote_types(x.dtype, cos.dtype)
    head, tail = x[..., :rotated].to(work), x[..., rotated:]
    cos, sin = cos.to(work), sin.to(work)
    if interleaved:
        pairs = head.unflatten(-1, (-1, 2))
        first, second = pairs[..., 0], pairs[..., 1]
        out = torch.stack((first * cos - second * sin, second * cos + first * sin), dim=-1).flatten(-2)
    else:
        first, second = head[..., : rotated // 2], head[..., rotated // 2 :]
        out = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    out = out.to(x.dtype)
    return out if tail.shape[-1] == 0 else torch.cat((out, tail), dim=-1)


def _positions(positions: int | Tensor, device: torch.device | str | None) -> Tensor:
    if isinstance(positions, Tensor):
        return positions.to(device=device if device is not None else positions.device, dtype=torch.float32)
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 0:
        raise InputError(f"rotary: expected a length (int >= 0) or a positions tensor, got {positions!r}.")
    return torch.arange(positions, device=device, dtype=torch.float32)

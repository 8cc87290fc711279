"""Moving the windows or time lines of a flattened `(T, H, W)` token grid into the batch axis.

Factorised video attention is block diagonal after a permutation, so the fast way to run it is to
reshape: OmniTokenizer's window blocks view `(B, H, W, C)` as `(B, H/wh, wh, W/ww, ww, C)` and move the
window indices next to the batch (`(B * nW, wh * ww, C)`, windows in row-major order); its temporal blocks
rearrange `b t h w d -> (b h w) t d`. These helpers do the same on tensors shaped `(B, *mid, L, C)`, where
`L = T * H * W` is flattened in t-h-w order and `*mid` is anything in between (e.g. heads), so a family can
partition tokens before its projections (as upstream does) or `attention()` can partition q, k, v.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from registry.errors import InputError


def _grid3(grid: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(grid)
    if len(dims) == 2:
        return 1, dims[0], dims[1]
    if len(dims) != 3:
        raise InputError(f"expected a token grid (T, H, W) or (H, W), got {grid!r}.")
    return dims  # type: ignore[return-value]


def _time_grid(grid: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(grid)
    return (dims[0], dims[1], 1) if len(dims) == 2 else _grid3(dims)


def _check_tokens(x: Tensor, tokens: int, what: str) -> None:
    if x.dim() < 3 or x.shape[-2] != tokens:
        raise InputError(
            f"{what}: expected a tensor (B, ..., L, C) with L = {tokens} grid tokens, got shape "
            f"{tuple(x.shape)}; flatten the (T, H, W) grid in t-h-w order along the second-last axis."
        )


def window_partition(x: Tensor, grid: Sequence[int], window: Sequence[int]) -> Tensor:
    """`(B, *mid, T*H*W, C) -> (B * T * nH * nW, *mid, wh * ww, C)`, windows batch-major, row-major."""
    frames, height, width = _grid3(grid)
    wh, ww = window
    _check_tokens(x, frames * height * width, "window_partition")
    batch, mid, channels = x.shape[0], tuple(x.shape[1:-2]), x.shape[-1]
    m = len(mid)
    x = x.reshape(batch, *mid, frames, height // wh, wh, width // ww, ww, channels)
    # (B, *mid, T, nH, wh, nW, ww, C) -> (B, T, nH, nW, *mid, wh, ww, C)
    order = (0, m + 1, m + 2, m + 4, *range(1, m + 1), m + 3, m + 5, m + 6)
    x = x.permute(order)
    return x.reshape(batch * frames * (height // wh) * (width // ww), *mid, wh * ww, channels)


def window_merge(windows: Tensor, grid: Sequence[int], window: Sequence[int]) -> Tensor:
    """The inverse of `window_partition`: `(B * nWin, *mid, wh * ww, C) -> (B, *mid, T*H*W, C)`."""
    frames, height, width = _grid3(grid)
    wh, ww = window
    count = frames * (height // wh) * (width // ww)
    if windows.dim() < 3 or windows.shape[0] % count or windows.shape[-2] != wh * ww:
        raise InputError(
            f"window_merge: expected (B * {count}, ..., {wh * ww}, C) windows of the grid {grid}, got "
            f"shape {tuple(windows.shape)}."
        )
    batch, mid, channels = windows.shape[0] // count, tuple(windows.shape[1:-2]), windows.shape[-1]
    m = len(mid)
    x = windows.reshape(batch, frames, height // wh, width // ww, *mid, wh, ww, channels)
    # (B, T, nH, nW, *mid, wh, ww, C) -> (B, *mid, T, nH, wh, nW, ww, C)
    order = (0, *range(4, 4 + m), 1, 2, 4 + m, 3, 5 + m, 6 + m)
    x = x.permute(order)
    return x.reshape(batch, *mid, frames * height * width, channels)


def time_partition(x: Tensor, grid: Sequence[int]) -> Tensor:
    """`(B, *mid, T*H*W, C) -> (B * H * W, *mid, T, C)`: one time line per spatial position."""
    frames, height, width = _time_grid(grid)
    _check_tokens(x, frames * height * width, "time_partition")
    batch, mid, channels = x.shape[0], tuple(x.shape[1:-2]), x.shape[-1]
    m = len(mid)
    x = x.reshape(batch, *mid, frames, height * width, channels)
    x = x.permute(0, m + 2, *range(1, m + 1), m + 1, m + 3)
    return x.reshape(batch * height * width, *mid, frames, channels)


def time_merge(lines: Tensor, grid: Sequence[int]) -> Tensor:
    """The inverse of `time_partition`: `(B * H * W, *mid, T, C) -> (B, *mid, T*H*W, C)`."""
    frames, height, width = _time_grid(grid)
    spatial = height * width
    if lines.dim() < 3 or lines.shape[0] % spatial or lines.shape[-2] != frames:
        raise InputError(
            f"time_merge: expected (B * {spatial}, ..., {frames}, C) time lines of the grid {grid}, got "
            f"shape {tuple(lines.shape)}."
        )
    batch, mid, channels = lines.shape[0] // spatial, tuple(lines.shape[1:-2]), lines.shape[-1]
    m = len(mid)
    x = lines.reshape(batch, spatial, *mid, frames, channels)
    x = x.permute(0, *range(2, 2 + m), 2 + m, 1, 3 + m)
    return x.reshape(batch, *mid, frames * spatial, channels)

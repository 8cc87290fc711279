"""`attention()`: check the inputs once, pick a backend, partition grid patterns, run."""

from __future__ import annotations

import torch
from torch import Tensor

from registry.errors import BackendError, InputError
from zoo.layers.attention.grid import time_merge, time_partition, window_merge, window_partition
from zoo.layers.attention.masks import FULL, MaskSpec
from zoo.layers.attention.math_backend import expand_local_bias, math_attention
from zoo.layers.attention.sdpa_backend import sdpa_attention, sdpa_dense
from zoo.layers.attention.select import requested_backend
from zoo.layers.attention.xformers_backend import has_native_bias, xformers_attention, xformers_installed


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: MaskSpec | None = None,
    bias: Tensor | None = None,
    backend: str | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Scaled dot-product attention over `(batch, heads, length, head_dim)` tensors.

    `mask` says which keys each query sees (see `MaskSpec`; `None` is full attention). `bias` is an
    additive float bias broadcastable to `(B, H, Lq, Lk)` (relative position biases), added before the
    mask; for the grid patterns it may instead be given per window or per time line, broadcastable to
    `(B, H, n, n)` with `n = wh * ww` or `T`. `dropout_p` applies whenever it is > 0 (pass 0 in eval).
    `scale` defaults to `head_dim ** -0.5`. Rows that see no key return zeros on every backend.
    """
    _check_tensors(q, k, v)
    spec = FULL if mask is None else mask
    if not isinstance(spec, MaskSpec):
        raise InputError(
            f"expected `mask` to be a MaskSpec or None, got {type(mask).__name__}; see MaskSpec.causal()."
        )
    batch, heads, lq, head_dim = q.shape
    lk = k.shape[-2]
    spec.check_fits(batch, lq, lk)
    local_bias = _check_bias(bias, spec, batch, heads, lq, lk)
    if not 0.0 <= dropout_p < 1.0:
        raise InputError(f"expected dropout_p in [0, 1), got {dropout_p}.")
    scale = head_dim**-0.5 if scale is None else float(scale)
    name = requested_backend(backend)

    if name == "math":
        if local_bias:
            assert bias is not None
            bias = expand_local_bias(bias, spec, lq)
        return math_attention(q, k, v, spec, bias, dropout_p, scale)
    if spec.grid is not None and (bias is None or local_bias):
        return _partitioned(name, q, k, v, spec, bias, dropout_p, scale)
    return _run(name, q, k, v, spec, bias, dropout_p, scale)


def _run(
    name: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    spec: MaskSpec,
    bias: Tensor | None,
    dropout_p: float,
    scale: float,
) -> Tensor:
    if name == "xformers":
        return _explicit_xformers(q, k, v, spec, bias, dropout_p, scale)
    if name == "auto" and q.device.type == "cuda" and xformers_installed() and has_native_bias(spec, bias):
        try:
            return xformers_attention(q, k, v, spec, bias, dropout_p, scale)
        except (NotImplementedError, ValueError):
            pass  # no xformers kernel for this dtype / head size / GPU: SDPA handles it
    if spec.grid is not None:
        return sdpa_dense(q, k, v, spec, bias, dropout_p, scale)
    return sdpa_attention(q, k, v, spec, bias, dropout_p, scale)


def _explicit_xformers(
    q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec, bias: Tensor | None, dropout_p: float, scale: float
) -> Tensor:
    try:
        return xformers_attention(q, k, v, spec, bias, dropout_p, scale)
    except NotImplementedError as error:
        raise BackendError(
            f"xformers has no kernel for this call (dtype {q.dtype}, head_dim {q.shape[-1]}, mask "
            f"{spec.kind}): {error}. Use backend='sdpa' or 'auto'."
        ) from error


def _partitioned(
    name: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    spec: MaskSpec,
    bias: Tensor | None,
    dropout_p: float,
    scale: float,
) -> Tensor:
    """Grid patterns as batched dense (window) or banded (time) attention after a reshape."""
    assert spec.grid is not None
    batch = q.shape[0]
    if spec.window is not None:
        grid, window = spec.grid, spec.window
        parts = [window_partition(x, grid, window) for x in (q, k, v)]
        inner = FULL
    else:
        grid = spec.grid
        parts = [time_partition(x, grid) for x in (q, k, v)]
        inner = FULL.with_window(spec.left, spec.right)
    if bias is not None:
        bias = _per_part_bias(bias, batch, parts[0].shape[0] // batch)
    out = _run(name, *parts, inner, bias, dropout_p, scale)
    return window_merge(out, grid, window) if spec.window is not None else time_merge(out, grid)


def _per_part_bias(bias: Tensor, batch: int, parts_per_row: int) -> Tensor:
    """A `(B or 1, H, n, n)` bias repeated for each window / time line of its batch row."""
    bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape)) if bias.dim() < 4 else bias
    if bias.shape[0] == 1:
        return bias
    return bias.repeat_interleave(parts_per_row, dim=0)


def _check_tensors(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(
                f"attention: expected `{name}` as a 4-D tensor (batch, heads, length, head_dim), "
                f"got {shape}; "
                "transpose (B, L, H, D) inputs with .transpose(1, 2)."
            )
        if not x.dtype.is_floating_point:
            raise InputError(f"attention: expected floating-point `{name}`, got {x.dtype}.")
    if q.shape[-1] != k.shape[-1]:
        raise InputError(
            f"attention: q and k head dims differ ({q.shape[-1]} vs {k.shape[-1]}); they must match to form "
            "q @ k^T. Check the head split of the projections."
        )
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3]:
        raise InputError(
            "attention: expected q (B, H, Lq, D), k (B, H, Lk, D) and v (B, H, Lk, Dv) with the same batch, "
            f"heads and key length, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; repeat "
            "grouped key/value heads to the query heads first."
        )
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise InputError(
            f"attention: q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} on "
            f"{q.device}/{k.device}/{v.device}."
        )


def _check_bias(bias: Tensor | None, spec: MaskSpec, batch: int, heads: int, lq: int, lk: int) -> bool:
    """Validate `bias`; True when it is given per window / time line (the local form)."""
    if bias is None:
        return False
    if not isinstance(bias, Tensor) or not bias.dtype.is_floating_point or bias.dim() > 4:
        what = (
            f"{bias.dtype} tensor of {bias.dim()} dims" if isinstance(bias, Tensor) else type(bias).__name__
        )
        raise InputError(f"attention: expected `bias` as a float tensor of at most 4 dims, got a {what}.")
    if spec.grid is not None:
        local = spec.window[0] * spec.window[1] if spec.window is not None else spec.grid[0]
        if _broadcasts(bias.shape, (batch, heads, local, local)):
            return True
    if _broadcasts(bias.shape, (batch, heads, lq, lk)):
        return False
    extra = ""
    if spec.grid is not None:
        extra = f" or, per {'window' if spec.window else 'time line'}, to {(batch, heads, local, local)}"
    raise InputError(
        f"attention: `bias` of shape {tuple(bias.shape)} does not broadcast to (B, H, Lq, Lk) = "
        f"{(batch, heads, lq, lk)}{extra}."
    )


def _broadcasts(shape: torch.Size, target: tuple[int, ...]) -> bool:
    try:
        return tuple(torch.broadcast_shapes(shape, target)) == target
    except RuntimeError:
        return False

"""xformers `memory_efficient_attention`, with `MaskSpec` translated to its `attn_bias` classes.

xformers is an optional extra (`pip install tokenzoo[xformers]`) and is imported only when this backend
runs; its kernels need CUDA, but its mask classes import anywhere, which is how the translation is
tested on CPU. Layout: xformers takes `(B, M, H, K)`; block-diagonal and padded-key masks fold the batch
into one packed sequence, as xformers expects.

Translation (all bottom-right aligned, like `MaskSpec`):
  full -> None; causal -> LowerTriangularMask (Lq == Lk) or LowerTriangularFromBottomRightMask;
  causal window (left=w, right=0) -> LowerTriangularFromBottomRightLocalAttentionMask(w + 1);
  other windows -> LocalAttentionFromBottomRightMask(left, right) (an open side becomes Lq + Lk);
  block diagonal -> BlockDiagonalMask, made causal / causal-local from the bottom right;
  key padding alone -> BlockDiagonalPaddedKeysMask.
Anything else (padding with a window, a bias) has no native class: this backend then adds a dense
tensor bias (correct, O(L^2)), and `auto` prefers SDPA instead.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from registry.errors import BackendError
from zoo.layers.attention.masks import MaskSpec


@functools.cache
def xformers_installed() -> bool:
    return importlib.util.find_spec("xformers") is not None


def _attn_bias_module() -> Any:
    return importlib.import_module("xformers.ops.fmha.attn_bias")


def has_native_bias(spec: MaskSpec, bias: Tensor | None) -> bool:
    """Whether xformers can run this (partitioned) spec without a dense O(L^2) tensor bias."""
    if bias is not None or spec.grid is not None:
        return False
    if spec.key_lengths is not None:
        return not spec.banded
    if spec.q_blocks is not None:
        if not spec.banded:
            return True
        # causal (or causal-window) blocks; xformers requires each block to have as many keys as queries
        assert spec.kv_blocks is not None
        return spec.right == 0 and all(nk >= nq for nq, nk in zip(spec.q_blocks, spec.kv_blocks, strict=True))
    return True


def native_bias(spec: MaskSpec, batch: int, lq: int, lk: int, device: torch.device) -> tuple[Any, bool]:
    """The xformers attn_bias for `spec` and whether the batch must be folded into one sequence."""
    ab = _attn_bias_module()
    if spec.key_lengths is not None:
        lengths = spec.key_lengths
        kv = [int(n) for n in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
        return ab.BlockDiagonalPaddedKeysMask.from_seqlens([lq] * batch, lk, kv, device=device), True
    if spec.q_blocks is not None:
        assert spec.kv_blocks is not None
        blocks = ab.BlockDiagonalMask.from_seqlens(
            list(spec.q_blocks) * batch, list(spec.kv_blocks) * batch, device=device
        )
        if not spec.banded:
            return blocks, True
        if spec.left is None:
            return blocks.make_causal_from_bottomright(), True
        return blocks.make_local_attention_from_bottomright(spec.left + 1), True
    if not spec.banded:
        return None, False
    if spec.is_causal:
        return (ab.LowerTriangularMask() if lq == lk else ab.LowerTriangularFromBottomRightMask()), False
    if spec.right == 0:
        assert spec.left is not None
        return ab.LowerTriangularFromBottomRightLocalAttentionMask(spec.left + 1), False
    wide = lq + lk
    left = wide if spec.left is None else spec.left
    right = wide if spec.right is None else spec.right
    return ab.LocalAttentionFromBottomRightMask(window_left=left, window_right=right), False


def dense_bias(
    spec: MaskSpec,
    bias: Tensor | None,
    batch: int,
    heads: int,
    lq: int,
    lk: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """A `(B, H, Lq, Lk)` additive bias, stored with an aligned row stride as xformers requires."""
    padded = math.ceil(lk / 8) * 8
    out = torch.zeros(batch, heads, lq, padded, dtype=dtype, device=device)[..., :lk]
    if bias is not None:
        out.copy_(bias.expand(batch, heads, lq, lk).to(dtype))
    allowed = spec.to_dense(lq, lk, device)
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # keyless rows: run unmasked, zeroed later
    return out.masked_fill_(~allowed, float("-inf"))


def xformers_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    spec: MaskSpec,
    bias: Tensor | None,
    dropout_p: float,
    scale: float,
    kernel: Callable[..., Tensor] | None = None,
) -> Tensor:
    """Run `spec` through xformers; `kernel` replaces `memory_efficient_attention` (tests only)."""
    if kernel is None:
        if not xformers_installed():
            raise BackendError(
                "attention backend 'xformers' was requested but xformers is not installed; install the "
                "optional extra (pip install 'tokenzoo[xformers]') or use backend='sdpa' / 'auto'."
            )
        if q.device.type != "cuda":
            raise BackendError(
                f"attention backend 'xformers' needs CUDA tensors, got tensors on {q.device.type}; move the "
                "model to a GPU or use backend='sdpa' / 'auto' (which falls back to SDPA)."
            )
        kernel = importlib.import_module("xformers.ops").memory_efficient_attention
    batch, heads, lq, _ = q.shape
    lk = k.shape[-2]
    qx, kx, vx = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if has_native_bias(spec, bias):
        attn_bias, fold = native_bias(spec, batch, lq, lk, q.device)
    else:
        attn_bias, fold = dense_bias(spec, bias, batch, heads, lq, lk, q.dtype, q.device), False
    if fold:
        qx, kx, vx = (x.reshape(1, -1, heads, x.shape[-1]) for x in (qx, kx, vx))
    out = kernel(qx, kx, vx, attn_bias=attn_bias, p=dropout_p, scale=scale)
    out = out.reshape(batch, lq, heads, -1).transpose(1, 2)
    if spec.banded or spec.key_lengths is not None or spec.q_blocks is not None:
        out = out.masked_fill(~spec.rows_with_keys(batch, lq, lk, q.device), 0.0)
    return out

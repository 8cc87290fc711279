"""PyTorch `scaled_dot_product_attention` without an O(L^2) mask where the pattern allows.

* full (maybe key-padded): one call, padding as a `(B, 1, 1, Lk)` mask.
* causal self-attention: `is_causal=True`.
* sliding windows, and causal with padding, a bias or `Lq != Lk`: the queries are cut into chunks and
  each chunk attends to the key range its window can reach, with a small chunk-sized mask, so memory
  grows linearly with length for a bounded window. (Under ONNX export with a symbolic length the band
  becomes one dense mask, so the graph keeps its dynamic length.)
* block diagonal: one call per block (one batched call when all blocks have the same size).
* grid patterns are partitioned into batches before they get here (see `dispatch.py`).

Rows that see no key are given a harmless mask for the kernel and zeroed afterwards, so no NaN appears
in the forward or backward pass. The loops run over Python ints, so ONNX export unrolls them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.attention.masks import MaskSpec, window_allows

# Scores per chunk (batch * heads * chunk queries * keys) kept under this many elements.
CHUNK_SCORE_BUDGET = 1 << 22
MIN_CHUNK, MAX_CHUNK = 16, 1024


def _as_4d(bias: Tensor) -> Tensor:
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape)) if bias.dim() < 4 else bias


def _slice_bias(bias: Tensor | None, q0: int, q1: int, k0: int, k1: int, lq: int, lk: int) -> Tensor | None:
    if bias is None:
        return None
    if bias.shape[-2] == lq and lq != 1:
        bias = bias[..., q0:q1, :]
    if bias.shape[-1] == lk and lk != 1:
        bias = bias[..., k0:k1]
    return bias


def _kernel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    allowed: Tensor | None,
    bias: Tensor | None,
    dropout_p: float,
    scale: float,
    is_causal: bool = False,
) -> Tensor:
    """One SDPA call; `allowed` rows without any True key are run unmasked, then zeroed."""
    has_key = None
    if allowed is not None:
        has_key = allowed.any(dim=-1, keepdim=True)
        allowed = allowed | ~has_key
    if bias is None:
        attn_mask = allowed
    else:
        attn_mask = bias.to(q.dtype)
        if allowed is not None:
            attn_mask = attn_mask.masked_fill(~allowed, float("-inf"))
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
    return out if has_key is None else out.masked_fill(~has_key, 0.0)


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    spec: MaskSpec,
    bias: Tensor | None,
    dropout_p: float,
    scale: float,
) -> Tensor:
    """SDPA for every non-grid `MaskSpec` (grid patterns arrive partitioned or as `dense=True`)."""
    if bias is not None:
        bias = _as_4d(bias)
    if spec.grid is not None:
        return sdpa_dense(q, k, v, spec, bias, dropout_p, scale)
    if spec.q_blocks is not None:
        return _block_diagonal(q, k, v, spec, bias, dropout_p, scale)
    lengths = None if spec.key_lengths is None else spec.lengths_tensor(q.device)
    static_lengths = None if isinstance(spec.key_lengths, Tensor) else spec.key_lengths
    return _banded(q, k, v, spec.left, spec.right, lengths, static_lengths, bias, dropout_p, scale)


def sdpa_dense(
    q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec, bias: Tensor | None, dropout_p: float, scale: float
) -> Tensor:
    """SDPA with the materialised mask: for patterns combined with a full-size `(.., Lq, Lk)` bias."""
    allowed = spec.to_dense(q.shape[-2], k.shape[-2], q.device)
    return _kernel(q, k, v, allowed, bias, dropout_p, scale)


def _banded(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    left: int | None,
    right: int | None,
    lengths: Tensor | None,
    static_lengths: tuple[int, ...] | None,
    bias: Tensor | None,
    dropout_p: float,
    scale: float,
) -> Tensor:
    batch, heads, lq, _ = q.shape
    lk = k.shape[-2]
    if left is None and right is None:
        allowed = None
        if lengths is not None:
            allowed = (torch.arange(lk, device=q.device) < lengths[:, None])[:, None, None, :]
        return _kernel(q, k, v, allowed, bias, dropout_p, scale)
    if left is None and right == 0 and lq == lk and lengths is None and bias is None:
        return _kernel(q, k, v, None, None, dropout_p, scale, is_causal=True)

    if not (isinstance(lq, int) and isinstance(lk, int)):
        # symbolic lengths (ONNX export with a dynamic length): chunk bounds cannot be Python ints, so
        # the band is one dense mask; the exported graph then serves every length
        pos = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
        keys = torch.arange(lk, device=q.device)[None, :]
        allowed = window_allows(pos, keys, left, right)
        if lengths is not None:
            allowed = allowed & (keys < lengths[:, None, None, None])
        return _kernel(q, k, v, allowed, bias, dropout_p, scale)
    shift = lk - lq
    key_limit = lk if static_lengths is None else min(lk, max(static_lengths))
    span = None if left is None or right is None else left + right + 1
    if span is not None:
        chunk = max(MIN_CHUNK, min(MAX_CHUNK, span))
    else:
        chunk = max(MIN_CHUNK, min(MAX_CHUNK, CHUNK_SCORE_BUDGET // max(1, batch * heads * key_limit)))
    outputs = []
    for q0 in range(0, lq, chunk):
        q1 = min(lq, q0 + chunk)
        k0 = 0 if left is None else max(0, q0 + shift - left)
        k1 = key_limit if right is None else min(key_limit, q1 - 1 + shift + right + 1)
        if k0 >= k1:
            outputs.append(q.new_zeros(batch, heads, q1 - q0, v.shape[-1]))
            continue
        pos = torch.arange(q0, q1, device=q.device)[:, None] + shift
        keys = torch.arange(k0, k1, device=q.device)[None, :]
        allowed = window_allows(pos, keys, left, right)
        if lengths is not None:
            allowed = allowed & (keys < lengths[:, None, None, None])
        chunk_bias = _slice_bias(bias, q0, q1, k0, k1, lq, lk)
        outputs.append(
            _kernel(
                q[..., q0:q1, :], k[..., k0:k1, :], v[..., k0:k1, :], allowed, chunk_bias, dropout_p, scale
            )
        )
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-2)


def _block_diagonal(
    q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec, bias: Tensor | None, dropout_p: float, scale: float
) -> Tensor:
    assert spec.q_blocks is not None and spec.kv_blocks is not None
    q_blocks, kv_blocks = spec.q_blocks, spec.kv_blocks
    batch, heads, lq, _ = q.shape
    lk = k.shape[-2]
    if bias is None and len(set(q_blocks)) == 1 and len(set(kv_blocks)) == 1 and kv_blocks[0] > 0:
        count, nq, nk = len(q_blocks), q_blocks[0], kv_blocks[0]

        def fold(x: Tensor, n: int) -> Tensor:
            return (
                x.reshape(batch, heads, count, n, x.shape[-1])
                .transpose(1, 2)
                .reshape(-1, heads, n, x.shape[-1])
            )

        out = _banded(
            fold(q, nq), fold(k, nk), fold(v, nk), spec.left, spec.right, None, None, None, dropout_p, scale
        )
        return out.reshape(batch, count, heads, nq, -1).transpose(1, 2).reshape(batch, heads, lq, -1)
    outputs = []
    q0 = k0 = 0
    for nq, nk in zip(q_blocks, kv_blocks, strict=True):
        q1, k1 = q0 + nq, k0 + nk
        if nk == 0:
            outputs.append(q.new_zeros(batch, heads, nq, v.shape[-1]))
        else:
            block_bias = _slice_bias(bias, q0, q1, k0, k1, lq, lk)
            outputs.append(
                _banded(
                    q[..., q0:q1, :],
                    k[..., k0:k1, :],
                    v[..., k0:k1, :],
                    spec.left,
                    spec.right,
                    None,
                    None,
                    block_bias,
                    dropout_p,
                    scale,
                )
            )
        q0, k0 = q1, k1
    return torch.cat(outputs, dim=-2)

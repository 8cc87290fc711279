"""The reference backend: explicit scores, the dense mask, softmax, weighted sum.

It materialises the `(B, H, Lq, Lk)` scores on purpose (it is what the other backends are checked
against), works in float32 for half-precision inputs, and gives rows with no allowed key an output of
zeros (not NaN), which is the convention all backends follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.attention.masks import MaskSpec


def expand_local_bias(bias: Tensor, spec: MaskSpec, length: int) -> Tensor:
    """Spread a per-window / per-time-line bias `(..., n, n)` over the flattened `(..., L, L)` grid.

    Only entries inside the pattern matter (the mask hides the rest), so each token pair reads the
    bias of its positions within their window (or their frames, for temporal).
    """
    assert spec.grid is not None
    _, height, width = spec.grid
    idx = torch.arange(length, device=bias.device)
    if spec.window is not None:
        wh, ww = spec.window
        size = wh * ww
        local = ((idx // width) % height % wh) * ww + (idx % width) % ww
    else:
        size = spec.grid[0]
        local = idx // (height * width)
    bias = bias.expand(*bias.shape[:-2], size, size)
    return bias[..., local, :][..., :, local]


def math_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    spec: MaskSpec,
    bias: Tensor | None,
    dropout_p: float,
    scale: float,
) -> Tensor:
    """Attention by definition; see the module docstring for the conventions."""
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    lq, lk = q.shape[-2], k.shape[-2]
    scores = torch.matmul(q.to(work), k.to(work).transpose(-2, -1)) * scale
    if bias is not None:
        scores = scores + bias.to(work)
    if spec.banded or spec.q_blocks is not None or spec.grid is not None or spec.key_lengths is not None:
        scores = scores.masked_fill(~spec.to_dense(lq, lk, q.device), float("-inf"))
    has_key = torch.isfinite(scores.amax(dim=-1, keepdim=True))
    probs = F.softmax(scores.masked_fill(~has_key, 0.0), dim=-1) * has_key
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, v.to(work)).to(q.dtype)

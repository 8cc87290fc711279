"""Codebook usage statistics: one definition for every quantizer (counts, perplexity, dead codes)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Above this many codes a histogram costs more than it tells (e.g. 2^128 grouped binary codes).
MAX_COUNTED_CODES = 1 << 22


@dataclass
class CodebookUsage:
    """Usage of one or several codebooks over a batch of ids.

    `counts` is (K,) for one codebook or (n_q, K) for several of equal size; `perplexity` is
    exp(entropy of the empirical code distribution) per codebook (K means uniform use, 1 means one
    code); `dead_fraction` is the share of codes never chosen in this batch.
    """

    counts: Tensor
    perplexity: Tensor
    dead_fraction: Tensor

    @classmethod
    def from_ids(cls, ids: Tensor, codebook_size: int, codebook_axis: bool = False) -> CodebookUsage:
        """Histogram `ids` (values in [0, codebook_size)); with `codebook_axis`, one row per codebook."""
        ids = ids.detach().long()
        if codebook_axis:
            flat = ids.reshape(-1, ids.shape[-1]).T
            offsets = torch.arange(flat.shape[0], device=ids.device).unsqueeze(1) * codebook_size
            counts = torch.bincount((flat + offsets).reshape(-1), minlength=flat.shape[0] * codebook_size)
            counts = counts.reshape(flat.shape[0], codebook_size)
        else:
            counts = torch.bincount(ids.reshape(-1), minlength=codebook_size)
        return cls.from_counts(counts)

    @classmethod
    def from_counts(cls, counts: Tensor) -> CodebookUsage:
        total = counts.sum(-1, keepdim=True).clamp(min=1).to(torch.float64)
        probs = counts.to(torch.float64) / total
        entropy = -(probs * torch.log(probs.clamp(min=1e-300))).sum(-1)
        perplexity = torch.exp(entropy).to(torch.float32)
        dead = (counts == 0).to(torch.float32).mean(-1)
        return cls(counts=counts, perplexity=perplexity, dead_fraction=dead)


def usage_or_none(ids: Tensor, codebook_size: int, codebook_axis: bool = False) -> CodebookUsage | None:
    """Usage when the codebook is small enough to histogram, else None."""
    if codebook_size > MAX_COUNTED_CODES or ids.numel() == 0:
        return None
    return CodebookUsage.from_ids(ids, codebook_size, codebook_axis=codebook_axis)

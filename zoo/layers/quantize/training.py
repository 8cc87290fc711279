"""Training-only helpers of codebook quantizers: k-means init, EMA updates, dead-code restart, gradients.

None of these run at inference: `VectorQuantizer` calls them only when `self.training` is set.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.quantize.search import Metric, nearest_code


def sample_rows(samples: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """`count` rows of `samples` drawn uniformly (without replacement when there are enough rows)."""
    n = samples.shape[0]
    if n >= count:
        index = torch.randperm(n, device=samples.device, generator=generator)[:count]
    else:
        index = torch.randint(0, n, (count,), device=samples.device, generator=generator)
    return samples[index]


def kmeans(
    samples: Tensor,
    num_clusters: int,
    iters: int,
    metric: Metric = "euclidean",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on (N, D) samples; returns (means (K, D), counts (K,)).

    Empty clusters keep their previous mean; with the cosine metric the means are re-normalised.
    Uses the shared chunked search, so memory stays bounded at large K.
    """
    samples = samples.detach().float()
    means = sample_rows(samples, num_clusters, generator)
    counts = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(iters):
        ids = nearest_code(samples, means, metric)
        counts = torch.bincount(ids, minlength=num_clusters)
        sums = torch.zeros_like(means).index_add_(0, ids, samples)
        new_means = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
        if metric == "cosine":
            new_means = F.normalize(new_means, dim=-1)
        means = torch.where((counts == 0).unsqueeze(1), means, new_means)
    return means, counts


def ema_update_(
    codebook: Tensor,
    cluster_size: Tensor,
    embed_avg: Tensor,
    samples: Tensor,
    ids: Tensor,
    decay: float,
    epsilon: float,
) -> None:
    """EnCodec's EMA codebook update with Laplace smoothing, without a (N, K) one-hot matrix."""
    num_codes = codebook.shape[0]
    counts = torch.bincount(ids, minlength=num_codes).to(cluster_size.dtype)
    sums = torch.zeros_like(embed_avg).index_add_(0, ids, samples.to(embed_avg.dtype))
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + num_codes * epsilon) * total
    codebook.copy_(embed_avg / smoothed.unsqueeze(1))


def restart_dead_codes_(
    codebook: Tensor,
    cluster_size: Tensor,
    samples: Tensor,
    threshold: float,
    embed_avg: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Replace codes whose EMA usage fell below `threshold` by random batch vectors; returns how many."""
    dead = cluster_size < threshold
    count = int(dead.sum())
    if count == 0 or samples.shape[0] == 0:
        return 0
    fresh = sample_rows(samples.detach().to(codebook.dtype), count, generator)
    codebook[dead] = fresh
    cluster_size[dead] = threshold
    if embed_avg is not None:
        embed_avg[dead] = fresh * threshold
    return count


Gradient = Literal["ste", "rotation"]


def rotation_trick(z: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """Value of `q`, gradient through the rotation + rescaling that maps z onto q (Fifty et al., 2024).

    With u = z/|z|, v = q/|q| and w = (u + v)/|u + v| (all treated as constants), R = I - 2ww^T + 2vu^T
    rotates u onto v; the output is (|q|/|z|) R z, so the gradient reaching z keeps the angle between
    the gradient and the code vector instead of copying it unchanged as straight-through does.
    """
    z_norm = z.norm(dim=-1, keepdim=True).clamp(min=eps)
    q_norm = q.norm(dim=-1, keepdim=True).clamp(min=eps)
    u = (z / z_norm).detach()
    v = (q / q_norm).detach()
    w = F.normalize(u + v, dim=-1, eps=eps).detach()
    rotated = z - 2 * (z * w).sum(-1, keepdim=True) * w + 2 * (z * u).sum(-1, keepdim=True) * v
    return rotated * (q_norm / z_norm).detach()


def straight_or_rotated(z: Tensor, q: Tensor, gradient: Gradient) -> Tensor:
    """Quantized values `q` carrying the chosen gradient estimator back to `z`."""
    if gradient == "rotation":
        return rotation_trick(z, q)
    return z + (q - z).detach()

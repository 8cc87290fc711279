"""The one nearest-neighbour search every codebook quantizer uses: chunked, memory-bounded, exportable.

Memory bound (eager): the search never holds more than one distance block of
`block_rows x chunk_size` floats (`block_rows = max(1, max_block_elements // chunk_size)`), i.e. about
`2 * max_block_elements * 4` bytes with its one temporary (32 MiB at the defaults), plus the O(N) running
best value and index and O(K) code norms. Under export/tracing the rows are not split (their number
is dynamic and a Python loop over them would be baked into the graph), so the bound there is
`N x chunk_size` floats; the loop over codebook chunks is static and exports fine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from registry.errors import ConfigError
from zoo.layers.quantize.base import checks_enabled

Metric = Literal["euclidean", "cosine"]

DEFAULT_CHUNK_SIZE = 4096
DEFAULT_BLOCK_ELEMENTS = 1 << 22

# (row block of latents, first code, one past last code) -> (rows, codes) scores, lower is better.
BlockScore = Callable[[Tensor, int, int], Tensor]


def chunked_argmin(
    rows: int,
    num_codes: int,
    score: Callable[[slice, int, int], Tensor],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    device: torch.device | None = None,
    largest: bool = False,
) -> Tensor:
    """Index of the best code per row, scanning codes in chunks with a running (best value, best index).

    `score(row_slice, start, stop)` returns the (rows in slice, stop - start) block of scores. Ties go
    to the lowest index, as `argmin`/`argmax` over the whole matrix would.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive number of codes; got {chunk_size}.")
    bounds = [(start, min(start + chunk_size, num_codes)) for start in range(0, num_codes, chunk_size)]
    if checks_enabled() and rows > 0:
        block_rows = max(1, max_block_elements // min(chunk_size, num_codes))
    else:
        block_rows = rows
    if block_rows >= rows:
        return _scan_codes(slice(None), bounds, score, largest)
    out = torch.empty(rows, dtype=torch.long, device=device)
    for row_start in range(0, rows, block_rows):
        part = slice(row_start, min(row_start + block_rows, rows))
        out[part] = _scan_codes(part, bounds, score, largest)
    return out


def _scan_codes(
    part: slice, bounds: list[tuple[int, int]], score: Callable[[slice, int, int], Tensor], largest: bool
) -> Tensor:
    best_val: Tensor | None = None
    best_idx: Tensor | None = None
    for start, stop in bounds:
        block = score(part, start, stop)
        val, idx = block.max(dim=1) if largest else block.min(dim=1)
        if best_val is None or best_idx is None:
            best_val, best_idx = val, idx + start if start else idx
            continue
        better = val > best_val if largest else val < best_val
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx + start, best_idx)
    assert best_idx is not None
    return best_idx


def euclidean_block(
    x: Tensor, x_sq: Tensor, codebook: Tensor, code_sq: Tensor, start: int, stop: int
) -> Tensor:
    """|x|^2 - 2 x.e + |e|^2 for codes [start, stop), rounded in the order upstream EnCodec uses."""
    dot = x @ codebook[start:stop].T
    dist = torch.add(x_sq, dot, alpha=-2)
    return dist.add_(code_sq[start:stop])


def nearest_code(
    z: Tensor,
    codebook: Tensor,
    metric: Metric = "euclidean",
    chunk_size: int | None = None,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    normalized: bool = False,
) -> Tensor:
    """Nearest code in `codebook` (K, D) for each vector of `z` (..., D); int64 ids of shape (...).

    euclidean: argmin |z|^2 - 2 z.e + |e|^2 (upstream EnCodec's order of operations, so ties and
    near-ties resolve as there; equal to argmax of the negated distance). cosine: argmax of the dot
    product of l2-normalised z and codes (skip the normalisation with `normalized=True`).
    Computed in float32 (float64 stays float64), without gradients. See the module docstring for
    the memory bound.
    """
    if metric not in ("euclidean", "cosine"):
        raise ConfigError(f"metric must be 'euclidean' or 'cosine'; got {metric!r}.")
    lead = z.shape[:-1]
    dtype = torch.float64 if torch.float64 in (z.dtype, codebook.dtype) else torch.float32
    chunk = int(chunk_size or DEFAULT_CHUNK_SIZE)
    with torch.no_grad():
        x = z.detach().reshape(-1, z.shape[-1]).to(dtype)
        codes = codebook.detach().to(dtype)
        if metric == "cosine":
            if not normalized:
                x = F.normalize(x, dim=-1)
                codes = F.normalize(codes, dim=-1)

            def score(part: slice, start: int, stop: int) -> Tensor:
                return x[part] @ codes[start:stop].T

            ids = chunked_argmin(x.shape[0], codes.shape[0], score, chunk, max_block_elements, x.device, True)
        else:
            x_sq = x.pow(2).sum(1, keepdim=True)
            code_sq = codes.pow(2).sum(1)

            def score(part: slice, start: int, stop: int) -> Tensor:
                return euclidean_block(x[part], x_sq[part], codes, code_sq, start, stop)

            ids = chunked_argmin(x.shape[0], codes.shape[0], score, chunk, max_block_elements, x.device)
    return ids.reshape(lead)

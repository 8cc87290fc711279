"""Input checks of the torch-free runtime: the numpy twins of `zoo.tokenizer.as_canonical` / `check_ids`.

Messages follow the PyTorch tokenizers' so a user gets the same advice from either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from export.errors import InputError
from export.tokens import as_numpy

LAYOUTS = {
    "image": ("(C,H,W) or (B,C,H,W)", 4),
    "video": ("(C,T,H,W) or (B,C,T,H,W)", 5),
    "audio": ("(N,), (C,N) or (B,C,N)", 3),
}


def canonical(x: Any, modality: str, channels: int | None = None) -> np.ndarray:
    """A float32 array in the canonical batched layout, or an InputError that says what to pass."""
    if isinstance(x, list | tuple):
        raise InputError(
            f"expected one array for {modality} input, got a {type(x).__name__}; stack items into a batch first"
        )
    arr = as_numpy(x)
    if not isinstance(arr, np.ndarray) or arr.dtype == object:
        raise InputError(f"expected a numpy array (or torch tensor) for {modality} input, got {type(x).__name__}")
    layout, ndim = LAYOUTS[modality]
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(
            f"{modality} input must be floating point (values in the canonical range), got {arr.dtype}; "
            "convert with x.astype(np.float32) / 127.5 - 1 for uint8 images"
        )
    while arr.ndim < ndim:
        arr = arr[None]
    if arr.ndim != ndim:
        raise InputError(f"{modality} input must be laid out {layout}; got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise InputError(f"{modality} input is empty (shape {tuple(arr.shape)}); nothing to tokenize")
    if channels is not None and arr.shape[1] != channels:
        raise InputError(
            f"{modality} input has {arr.shape[1]} channels, this tokenizer takes {channels}; "
            + ("downmix with x.mean(1, keepdims=True)" if modality == "audio" and channels == 1 else
               "convert to the expected channel count first")
        )
    if not bool(np.isfinite(arr).all()):
        raise InputError(f"{modality} input contains NaN or Inf values; clean or clip the input first")
    return np.ascontiguousarray(arr, dtype=np.float32)


def sample_counts(lengths: Sequence[int] | Any | None, batch: int, total: int) -> list[int]:
    """Per-clip sample counts of a right-padded batch (all `total` when lengths is None)."""
    if lengths is None:
        return [total] * batch
    values = as_numpy(lengths).reshape(-1)
    if not np.issubdtype(values.dtype, np.integer) or values.size != batch:
        raise InputError(
            f"lengths must hold one integer sample count per clip ({batch}); got shape {tuple(values.shape)} "
            f"of {values.dtype}"
        )
    counts = [int(v) for v in values]
    if min(counts) < 1 or max(counts) > total:
        raise InputError(
            f"lengths must lie in [1, {total}] (the padded length); got {counts}. An empty clip has no tokens: "
            "leave it out of the batch."
        )
    return counts


def int_ids(ids: Any, sizes: Sequence[int], what: str = "ids") -> np.ndarray:
    """Integer ids in [0, size) per codebook (the last axis when several sizes are given), as int64."""
    arr = as_numpy(ids)
    if arr is None or not np.issubdtype(arr.dtype, np.integer):
        found = None if arr is None else arr.dtype
        raise InputError(f"{what} must be an integer array, got {found}; use ids.astype(np.int64)")
    if arr.size == 0:
        raise InputError(f"{what} is empty (shape {tuple(arr.shape)}); nothing to decode")
    arr = arr.astype(np.int64)
    if len(sizes) == 1:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high >= sizes[0]:
            raise InputError(f"{what} must lie in [0, {sizes[0] - 1}]; got values in [{low}, {high}]")
        return arr
    if arr.shape[-1] > len(sizes):
        raise InputError(f"{what} has {arr.shape[-1]} codebooks on its last axis; at most {len(sizes)} exist")
    bound = np.asarray(sizes[: arr.shape[-1]], dtype=np.int64)
    if bool(((arr < 0) | (arr >= bound)).any()):
        raise InputError(
            f"{what} must lie in [0, size) per codebook (sizes {list(sizes)}); got values in "
            f"[{int(arr.min())}, {int(arr.max())}]"
        )
    return arr


def float_array(x: Any, what: str) -> np.ndarray:
    arr = as_numpy(x)
    if arr is None or not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what} must be a floating-point array; got {None if arr is None else arr.dtype}")
    if not bool(np.isfinite(arr).all()):
        raise InputError(f"{what} contains NaN or Inf values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def rng_of(rng: Any) -> np.random.Generator:
    """A numpy Generator from None, a seed or a Generator (the runtime's stand-in for torch generators)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, int):
        return np.random.default_rng(rng)
    raise InputError(f"rng must be a numpy Generator or an int seed; got {type(rng).__name__}")


def pad_last(arrays: list[np.ndarray], axis: int = -1) -> np.ndarray:
    """Stack arrays that differ only along `axis`, zero-padding each to the longest."""
    longest = max(a.shape[axis] for a in arrays)
    out = []
    for a in arrays:
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, longest - a.shape[axis])
        out.append(np.pad(a, widths))
    return np.stack(out)

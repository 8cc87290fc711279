"""Helpers shared by the image, video and audio readers: sources, validation and error wrapping.

Decoders (Pillow, PyAV, libsndfile) raise their own exception types with messages that rarely name
the file; everything here exists so that a user only ever sees a `MediaError`/`InputError` that says
which file, what went wrong and what to do.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.errors import InputError, MediaError

PathLike = str | os.PathLike[str]
"""A filesystem path."""

Source = PathLike | bytes | bytearray | io.IOBase
"""Anything a reader can decode: a path, raw bytes or a binary file object."""


def is_file_source(src: object) -> bool:
    """True for paths, bytes and binary file objects (as opposed to arrays and tensors)."""
    return isinstance(src, str | os.PathLike | bytes | bytearray | io.IOBase)


def describe(src: object) -> str:
    """A short name for `src` to put in error messages."""
    if isinstance(src, str | os.PathLike):
        return f"'{os.fspath(src)}'"
    if isinstance(src, bytes | bytearray):
        return f"<{len(src)} bytes in memory>"
    name = getattr(src, "name", None)
    if isinstance(name, str):
        return f"'{name}'"
    return f"<{type(src).__name__}>"


def read_bytes(src: Source, what: str) -> bytes:
    """Read a whole source into memory, turning missing files into a clear `MediaError`."""
    if isinstance(src, bytes | bytearray):
        return bytes(src)
    if isinstance(src, io.IOBase):
        data = src.read()
        if not isinstance(data, bytes):
            raise InputError(
                f"{what}: expected a binary file object, got a text stream {describe(src)}; "
                "open the file with mode 'rb'."
            )
        return data
    path = Path(src)
    if not path.exists():
        raise MediaError(f"{what}: file {describe(src)} does not exist; check the path.")
    if path.is_dir():
        raise MediaError(f"{what}: {describe(src)} is a directory, expected a media file.")
    try:
        return path.read_bytes()
    except OSError as err:
        raise MediaError(
            f"{what}: cannot read {describe(src)} ({err.strerror or err}); check the file's permissions."
        ) from err


def head_bytes(src: Source, n: int = 64) -> bytes:
    """The first `n` bytes of a source without consuming a file object."""
    if isinstance(src, bytes | bytearray):
        return bytes(src[:n])
    if isinstance(src, io.IOBase):
        pos = src.tell()
        data = src.read(n)
        src.seek(pos)
        return data if isinstance(data, bytes) else b""
    path = Path(src)
    if not path.is_file():
        raise MediaError(f"file {describe(src)} does not exist or is not a regular file; check the path.")
    with path.open("rb") as fh:
        return fh.read(n)


@contextmanager
def decoding(src: object, kind: str, hint: str = "") -> Iterator[None]:
    """Turn any decoder exception raised inside the block into a `MediaError` naming `src`.

    Our own `InputError`s pass through untouched; anything else (Pillow's OSError, PyAV's FFmpegError,
    libsndfile's LibsndfileError, numpy's ValueError from a short buffer) is a file we could not read.
    """
    try:
        yield
    except InputError:
        raise
    except MemoryError as err:
        raise MediaError(
            f"cannot decode {kind} {describe(src)}: out of memory; "
            "lower the limits (max_pixels / max_frames / duration) or use a smaller file."
        ) from err
    except Exception as err:  # noqa: BLE001 - decoders raise many unrelated types
        reason = str(err).strip() or type(err).__name__
        extra = f" {hint}" if hint else ""
        raise MediaError(
            f"cannot decode {kind} {describe(src)}: {reason.rstrip('.')}. The file is corrupt, "
            f"truncated or not a readable {kind} file.{extra}"
        ) from err


def to_numpy(x: Any, what: str) -> np.ndarray:
    """A numpy view of an array-like (numpy, torch, list), checked for a numeric dtype."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.float()
        arr = x.numpy()
    else:
        arr = np.asarray(x)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{what}: expected a numeric array, got dtype {arr.dtype}.")
    return arr


def check_finite(arr: np.ndarray | torch.Tensor, what: str) -> None:
    """Raise `InputError` when a float array holds NaN or Inf, saying how many and where the first is."""
    if isinstance(arr, torch.Tensor):
        if not arr.is_floating_point():
            return
        bad = ~torch.isfinite(arr)
        count = int(bad.sum())
        if count:
            first = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise InputError(
                f"{what}: found {count} NaN/Inf value(s), first at index {first}; "
                "fix the producer of this tensor (e.g. a diverged decoder) before saving or scoring."
            )
        return
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = ~np.isfinite(arr)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{what}: found {count} NaN/Inf value(s), first at index {first}; "
            "replace or drop them before converting."
        )


def scale_from_range(arr: np.ndarray, value_range: tuple[float, float], what: str) -> np.ndarray:
    """Map floats in `value_range` to [0, 1], rejecting values clearly outside it (tolerance 1e-3)."""
    lo, hi = value_range
    if not hi > lo:
        raise InputError(f"{what}: value_range must be (low, high) with high > low, got {value_range}.")
    out = (arr.astype(np.float64) - lo) / (hi - lo)
    if out.size:
        mn, mx = float(out.min()), float(out.max())
        if mn < -1e-3 or mx > 1 + 1e-3:
            raise InputError(
                f"{what}: values span [{mn * (hi - lo) + lo:.4g}, {mx * (hi - lo) + lo:.4g}] but "
                f"value_range is {value_range}; pass the range your data is in "
                "(e.g. value_range=(-1, 1) for canonical tensors, (0, 255) for float pixels)."
            )
    return np.clip(out, 0.0, 1.0)


def int_to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer pixels to float64 in [0, 1] by their dtype's full scale (uint8 / 255, uint16 / 65535)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):
        mx = int(arr.max()) if arr.size else 0
        mn = int(arr.min()) if arr.size else 0
        if mn >= 0 and mx <= 255:
            return arr.astype(np.float64) / 255.0
        if mn >= 0 and mx <= 65535:
            return arr.astype(np.float64) / 65535.0
        raise InputError(
            f"integer pixels must lie in [0, 65535], got [{mn}, {mx}] ({arr.dtype}); "
            "convert to uint8/uint16 or to floats with a value_range."
        )
    raise InputError(f"expected an integer array, got {arr.dtype}.")

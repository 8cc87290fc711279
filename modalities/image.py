"""Images in and out: files, arrays and PIL images to canonical (B, 3, H, W) float32 in [-1, 1] and back.

Pillow decodes most files; 16-bit colour PNG/TIFF go through FFmpeg (PyAV) because Pillow silently
drops them to 8 bits. EXIF orientation is applied, grey is replicated to RGB and alpha is composited
over a background so every image a tokenizer sees has exactly three channels.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from modalities._common import (
    PathLike,
    Source,
    check_finite,
    decoding,
    describe,
    int_to_unit,
    is_file_source,
    read_bytes,
    scale_from_range,
    to_numpy,
)
from modalities.geometry import Interp, Padding, PadMode, Policy, Prepared, fit
from registry.errors import InputError, MediaError

DEFAULT_MAX_PIXELS = 1 << 26
"""Decompression-bomb guard: 67 megapixels (8192 x 8192); raise per call with ``max_pixels=``."""

DEFAULT_MIN_SIDE = 8
"""Smallest side accepted: below this no tokenizer has a single token to give."""

FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
"""File suffixes `save` writes, and the Pillow format each one means."""

_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Background = float | tuple[float, float, float]


@dataclass(frozen=True)
class ImageInfo:
    """What the file header says, read without decoding the pixels."""

    width: int
    height: int
    mode: str
    format: str
    bit_depth: int
    frames: int
    orientation: int


# --------------------------------------------------------------------------------------------- reading


def _open_pil(data: bytes, src: object, max_pixels: int) -> Image.Image:
    """Open lazily and refuse oversized or unidentifiable files before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise MediaError(
            f"image {describe(src)} is larger than Pillow's decompression-bomb limit "
            f"({err}); refusing to decode it."
        ) from err
    except UnidentifiedImageError as err:
        from modalities._sniff import sniff_bytes

        kind = sniff_bytes(data[:64])
        what = (
            f"it looks like {kind}"
            if kind not in (None, "image")
            else "its content is not a known image format"
        )
        raise MediaError(
            f"cannot read image {describe(src)}: {what}. Expected PNG, JPEG, WebP, BMP, TIFF or GIF; "
            "use modalities.detect(path) to see what the file is."
        ) from err
    w, h = im.size
    if w * h > max_pixels:
        raise MediaError(
            f"image {describe(src)} is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} "
            "(a decompression-bomb guard); pass a larger max_pixels= if you trust the file."
        )
    return im


def _bit_depth(im: Image.Image, data: bytes) -> int:
    """Bits per sample as stored in the file (Pillow's mode hides 16-bit colour)."""
    if data.startswith(_PNG_SIGNATURE) and len(data) > 25:
        return int(data[24])
    bits = getattr(im, "tag_v2", {}).get(258) if im.format == "TIFF" else None
    if bits:
        return int(max(bits) if isinstance(bits, tuple) else bits)
    return 16 if im.mode.startswith("I;16") else 8


def _decode_16bit_colour(data: bytes, fmt: str) -> np.ndarray:
    """16-bit RGB(A) PNG/TIFF through FFmpeg, which keeps all 16 bits."""
    with av.open(io.BytesIO(data), format="png_pipe" if fmt == "PNG" else "tiff_pipe") as container:
        frame = next(container.decode(video=0))
        has_alpha = "a" in frame.format.name.replace("gray", "")
        return frame.to_ndarray(format="rgba64le" if has_alpha else "rgb48le")


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """(H, W, C) array, C in 1..4, integer or [0, 1] float, from any Pillow mode."""
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB")
    elif mode in ("RGBa", "La"):
        im = im.convert(mode.upper())
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    elif im.mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise MediaError(f"32-bit integer image with values in [{lo}, {hi}]; expected 0..65535.")
        arr = arr.astype(np.uint16)
    elif im.mode == "F":
        arr = scale_from_range(arr, (0.0, 1.0), "float image").astype(np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Undo an EXIF orientation (1..8) on an (H, W, ...) array, as a camera viewer would."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, k=1),
    }
    return np.ascontiguousarray(ops.get(int(orientation), ops[1])(arr))


def _decode_file(src: Source, max_pixels: int, min_side: int) -> np.ndarray:
    data = read_bytes(src, "image")
    if not data:
        raise MediaError(f"image file {describe(src)} is empty (0 bytes).")
    im = _open_pil(data, src, max_pixels)
    w, h = im.size
    if min(w, h) < min_side:
        raise MediaError(
            f"image {describe(src)} is {w}x{h} pixels; expected at least {min_side} pixels per side "
            "(pass min_side= to accept smaller images)."
        )
    with decoding(src, "image"):
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
        if _bit_depth(im, data) == 16 and im.mode not in ("L", "I") and not im.mode.startswith("I;16"):
            arr = _decode_16bit_colour(data, im.format or "")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
            arr = _pil_to_array(im)
    return apply_orientation(arr, orientation)


# --------------------------------------------------------------------------------------------- canonical


def _background(background: Background) -> np.ndarray:
    bg = np.asarray(background, dtype=np.float64).reshape(-1)
    if bg.size not in (1, 3) or bg.min() < 0 or bg.max() > 1:
        raise InputError(f"background must be a float or an RGB triple in [0, 1], got {background}.")
    return np.broadcast_to(bg, (3,))


def _hwc_to_canonical(
    arr: np.ndarray, background: Background, value_range: tuple[float, float] | None, what: str
) -> torch.Tensor:
    """(H, W, C) with C in 1..4 to (3, H, W) float32 in [-1, 1]."""
    c = arr.shape[-1]
    if c not in (1, 2, 3, 4):
        raise InputError(
            f"{what}: expected 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels, got {c} "
            f"in shape {tuple(arr.shape)}; images are (H, W, C) for numpy/PIL and (C, H, W) for torch."
        )
    if np.issubdtype(arr.dtype, np.floating):
        check_finite(arr, what)
        unit = scale_from_range(arr, value_range or (0.0, 1.0), what)
    else:
        unit = int_to_unit(arr)
    if c in (2, 4):
        colour, alpha = unit[..., :-1], unit[..., -1:]
        unit = colour * alpha + _background(background)[: colour.shape[-1]] * (1.0 - alpha)
    if unit.shape[-1] == 1:
        unit = np.repeat(unit, 3, axis=-1)
    out = torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1))) * 2.0 - 1.0
    return out.float()


def to_canonical(
    x: Any, *, value_range: tuple[float, float] | None = None, background: Background = 1.0
) -> torch.Tensor:
    """Arrays and PIL images to (B, 3, H, W) float32 in [-1, 1].

    numpy/PIL follow the (H, W[, C]) / (N, H, W, C) layout, torch tensors (C, H, W) / (B, C, H, W).
    Integers scale by their dtype (uint8 by 255, uint16 by 65535); floats are taken as [0, 1] unless
    `value_range` says otherwise (pass ``(-1, 1)`` for tensors already canonical).
    """
    if isinstance(x, Image.Image):
        return _hwc_to_canonical(_pil_to_array(x), background, value_range, "PIL image")[None]
    is_torch = isinstance(x, torch.Tensor)
    arr = to_numpy(x, "image array")
    what = f"image {'tensor' if is_torch else 'array'} of shape {tuple(arr.shape)}"
    if is_torch:
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise InputError(f"{what}: expected (C, H, W) or (B, C, H, W).")
        arr = arr.transpose(0, 2, 3, 1)
    else:
        if arr.ndim == 2:
            arr = arr[None, :, :, None]
        elif arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise InputError(f"{what}: expected (H, W), (H, W, C) or (N, H, W, C).")
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise InputError(f"{what}: image has an empty side.")
    return torch.stack([_hwc_to_canonical(a, background, value_range, what) for a in arr])


def load(
    src: Source | Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    background: Background = 1.0,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Read an image file (PNG/JPEG/WebP/BMP/TIFF/GIF) or array into (1, 3, H, W) float32 in [-1, 1].

    EXIF orientation is applied; grey becomes RGB; alpha is composited over `background` (white).
    Arrays, tensors and PIL images go through `to_canonical`.
    """
    if not is_file_source(src):
        out = to_canonical(src, value_range=value_range, background=background)
        h, w = out.shape[-2:]
        if min(h, w) < min_side:
            raise InputError(f"image array is {w}x{h}; expected at least {min_side} pixels per side.")
        if h * w > max_pixels:
            raise InputError(f"image array has {h * w} pixels, above max_pixels={max_pixels}.")
        return out
    arr = _decode_file(src, max_pixels, min_side)
    return _hwc_to_canonical(arr, background, None, f"image {describe(src)}")[None]


def prepare(
    src: Source | Any,
    *,
    size: int | tuple[int, int] | None = None,
    policy: Policy = "resize_crop",
    multiple: int | tuple[int, int] = 1,
    pad_mode: PadMode = "replicate",
    interpolation: Interp = "bicubic",
    **load_kwargs: Any,
) -> Prepared:
    """`load` then `geometry.fit`: what a tokenizer's spec asks for, with the padding remembered."""
    pixels = load(src, **load_kwargs)
    return fit(
        pixels, size=size, policy=policy, multiple=multiple, pad_mode=pad_mode, interpolation=interpolation
    )


def info(src: Source) -> ImageInfo:
    """Size, mode, format and bit depth from the header only."""
    data = read_bytes(src, "image")
    im = _open_pil(data, src, max_pixels=1 << 62)
    with decoding(src, "image"):
        return ImageInfo(
            width=im.size[0],
            height=im.size[1],
            mode=im.mode,
            format=im.format or "",
            bit_depth=_bit_depth(im, data),
            frames=int(getattr(im, "n_frames", 1)),
            orientation=int(im.getexif().get(_EXIF_ORIENTATION, 1)),
        )


# --------------------------------------------------------------------------------------------- writing


def to_uint(x: Any, bit_depth: int = 8, *, padding: Padding | None = None) -> np.ndarray:
    """Canonical (1, C, H, W) / (C, H, W) in [-1, 1] to an (H, W, C) uint8 or uint16 array."""
    if bit_depth not in (8, 16):
        raise InputError(f"bit_depth must be 8 or 16, got {bit_depth}.")
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(to_numpy(x, "image"))
    shape = tuple(t.shape)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise InputError(
                f"save writes one image, got a batch of {t.shape[0]} (shape {shape}); save x[i:i+1] "
                "for each i, or use modalities.plots.image_grid for a contact sheet."
            )
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise InputError(
            f"expected a canonical image (1, 3, H, W) or (3, H, W) (or 1 channel for grey), "
            f"got shape {shape}."
        )
    t = t.detach().cpu().double()
    check_finite(t, "image to save")
    if padding is not None:
        t = padding.crop(t)
    full = 255.0 if bit_depth == 8 else 65535.0
    arr = torch.round((t.clamp(-1.0, 1.0) + 1.0) * (full / 2.0)).numpy()
    return arr.astype(np.uint8 if bit_depth == 8 else np.uint16).transpose(1, 2, 0)


def _encode_16bit_colour(arr: np.ndarray, fmt: str) -> bytes:
    """16-bit RGB PNG/TIFF through FFmpeg (Pillow cannot write them)."""
    buf = io.BytesIO()
    h, w = arr.shape[:2]
    with av.open(buf, mode="w", format="image2pipe") as container:
        stream = container.add_stream("png" if fmt == "PNG" else "tiff")
        stream.width, stream.height = w, h
        stream.pix_fmt = "rgb48be" if fmt == "PNG" else "rgb48le"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb48le")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def save(
    x: Any,
    path: PathLike,
    *,
    bit_depth: int = 8,
    quality: int = 95,
    lossless: bool = False,
    padding: Padding | None = None,
) -> Path:
    """Write a canonical image; the format follows the suffix (.png .jpg .webp .bmp .tif).

    `bit_depth=16` is for PNG and TIFF. `lossless=True` makes WebP lossless (PNG/BMP/TIFF always are).
    `padding` crops what `geometry.fit` added before writing.
    """
    out = Path(os.fspath(path))
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot save image to {describe(path)}: unknown suffix {out.suffix!r}; use one of "
            f"{', '.join(sorted(FORMATS))}."
        )
    if bit_depth == 16 and fmt not in ("PNG", "TIFF"):
        raise InputError(f"bit_depth=16 is only for .png and .tif, got {out.suffix!r}.")
    if not out.parent.is_dir():
        raise MediaError(f"cannot save image to {describe(path)}: folder {str(out.parent)!r} does not exist.")
    arr = to_uint(x, bit_depth, padding=padding)
    grey = arr.shape[-1] == 1
    try:
        if bit_depth == 16 and not grey:
            out.write_bytes(_encode_16bit_colour(arr, fmt))
            return out
        im = Image.fromarray(
            arr[..., 0].astype(np.uint16) if (grey and bit_depth == 16) else (arr[..., 0] if grey else arr)
        )
        kwargs: dict[str, Any] = {}
        if fmt == "JPEG":
            kwargs = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
        elif fmt == "WEBP":
            # in lossless mode WebP's "quality" is encoder effort, not fidelity: 50 is 5x faster than 100
            kwargs = {"quality": 50 if lossless else quality, "lossless": lossless}
        elif fmt == "TIFF":
            kwargs = {"compression": "tiff_deflate"}
        im.save(out, format=fmt, **kwargs)
    except OSError as err:
        raise MediaError(f"cannot write image {describe(path)}: {err}.") from err
    return out

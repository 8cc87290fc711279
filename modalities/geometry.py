"""Spatial fitting of canonical pixels to what a tokenizer accepts: resize, crop, pad and undo.

Works on the last two axes, so the same functions serve images (B,C,H,W) and videos (B,C,T,H,W).
Padding goes on the bottom and right so token (0, 0) stays on the image's top-left corner, and the
amounts are kept in a `Padding` so a decoded image can be cropped back to the original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from registry.errors import ConfigError, InputError

Policy = Literal["resize_crop", "resize", "pad", "none"]
PadMode = Literal["replicate", "reflect", "constant"]
Interp = Literal["bicubic", "bilinear", "nearest", "area"]


def _size2(size: int | tuple[int, int], what: str) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair, validated positive."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise ConfigError(f"{what}: size must be positive, got {size}.")
    return int(h), int(w)


def _as_4d(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Fold every leading axis into the batch so 2-D ops run on (N, C, H, W)."""
    if x.ndim < 3:
        raise InputError(f"expected at least (C, H, W), got shape {tuple(x.shape)}.")
    lead = tuple(x.shape[:-2])
    return x.reshape(-1, 1, x.shape[-2], x.shape[-1]), lead


def resize(
    x: torch.Tensor, size: int | tuple[int, int], *, interpolation: Interp = "bicubic", antialias: bool = True
) -> torch.Tensor:
    """Resize the last two axes to `size` (anti-aliased when shrinking); values stay in [-1, 1]."""
    h, w = _size2(size, "resize")
    if (x.shape[-2], x.shape[-1]) == (h, w):
        return x
    flat, lead = _as_4d(x.float())
    kwargs: dict[str, object] = {}
    if interpolation in ("bicubic", "bilinear"):
        kwargs = {"align_corners": False, "antialias": antialias}
    out = F.interpolate(flat, size=(h, w), mode=interpolation, **kwargs)
    return out.clamp_(-1.0, 1.0).reshape(*lead, h, w)


def resize_short_side(x: torch.Tensor, size: int, *, interpolation: Interp = "bicubic") -> torch.Tensor:
    """Scale so the shorter side equals `size`, keeping the aspect ratio (the long side is rounded)."""
    h, w = x.shape[-2], x.shape[-1]
    scale = size / min(h, w)
    new = (size, max(size, round(w * scale))) if h <= w else (max(size, round(h * scale)), size)
    return resize(x, new, interpolation=interpolation)


def center_crop(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The central `size` window of the last two axes; the window must fit inside the input."""
    h, w = _size2(size, "center_crop")
    H, W = x.shape[-2], x.shape[-1]
    if h > H or w > W:
        raise InputError(
            f"center_crop: cannot take {h}x{w} from a {H}x{W} input; resize first "
            "(e.g. policy='resize_crop')."
        )
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]


@dataclass(frozen=True)
class Padding:
    """Pixels added to the bottom and right of an input (and frames added at the tail of a video)."""

    bottom: int = 0
    right: int = 0

    @property
    def is_zero(self) -> bool:
        return self.bottom == 0 and self.right == 0

    def crop(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Remove the padding from a decoded tensor; `scale` is output size / input size (2 for 2x SR)."""
        b, r = round(self.bottom * scale), round(self.right * scale)
        H, W = x.shape[-2], x.shape[-1]
        if b >= H or r >= W:
            raise InputError(
                f"Padding.crop: padding {b}x{r} does not fit a {H}x{W} tensor; pass the tensor "
                "decoded from the padded input (and its scale)."
            )
        return x[..., : H - b, : W - r]


def pad_to_multiple(
    x: torch.Tensor, multiple: int | tuple[int, int], *, mode: PadMode = "replicate", value: float = 0.0
) -> tuple[torch.Tensor, Padding]:
    """Pad the bottom/right so height and width are multiples of the tokenizer's downsampling factor."""
    mh, mw = _size2(multiple, "pad_to_multiple")
    H, W = x.shape[-2], x.shape[-1]
    pb, pr = (-H) % mh, (-W) % mw
    pad = Padding(bottom=pb, right=pr)
    if pad.is_zero:
        return x, pad
    if mode == "reflect" and (pb >= H or pr >= W):
        mode = "replicate"  # reflect needs the pad to be smaller than the side it mirrors
    flat, lead = _as_4d(x)
    if mode == "constant":
        out = F.pad(flat, (0, pr, 0, pb), mode="constant", value=value)
    elif mode in ("replicate", "reflect"):
        out = F.pad(flat, (0, pr, 0, pb), mode=mode)
    else:
        raise ConfigError(
            f"pad_to_multiple: mode must be 'replicate', 'reflect' or 'constant', got {mode!r}."
        )
    return out.reshape(*lead, H + pb, W + pr), pad


@dataclass(frozen=True)
class Prepared:
    """A fitted tensor plus what `restore` needs to map a decoded tensor back to the input's frame."""

    pixels: torch.Tensor
    padding: Padding
    original_size: tuple[int, int]

    def restore(self, decoded: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Crop the padding that `fit` added from a decoded tensor."""
        return self.padding.crop(decoded, scale)


def fit(
    x: torch.Tensor,
    *,
    size: int | tuple[int, int] | None = None,
    policy: Policy = "resize_crop",
    multiple: int | tuple[int, int] = 1,
    pad_mode: PadMode = "replicate",
    interpolation: Interp = "bicubic",
) -> Prepared:
    """Apply a tokenizer's input policy.

    - ``resize_crop``: resize the short side to `size` (int) or cover `size` (pair), then center crop.
    - ``resize``: resize to exactly `size`, ignoring the aspect ratio.
    - ``pad``: keep the pixels (downscale first only if `size` is given and the long side exceeds it),
      then pad to `multiple`; `Prepared.restore` crops the padding off again.
    - ``none``: leave as is; the size must already be a multiple.
    """
    original = (int(x.shape[-2]), int(x.shape[-1]))
    if policy == "resize_crop":
        if size is None:
            raise ConfigError("fit: policy 'resize_crop' needs a size, e.g. size=256.")
        h, w = _size2(size, "fit")
        H, W = original
        scale = max(h / H, w / W)
        covered = resize(x, (max(h, round(H * scale)), max(w, round(W * scale))), interpolation=interpolation)
        x = center_crop(covered, (h, w))
    elif policy == "resize":
        if size is None:
            raise ConfigError("fit: policy 'resize' needs a size, e.g. size=(256, 256).")
        x = resize(x, size, interpolation=interpolation)
    elif policy == "pad":
        if size is not None:
            limit = max(_size2(size, "fit"))
            if max(original) > limit:
                scale = limit / max(original)
                x = resize(
                    x,
                    (max(1, round(original[0] * scale)), max(1, round(original[1] * scale))),
                    interpolation=interpolation,
                )
    elif policy != "none":
        raise ConfigError(
            f"fit: policy must be one of 'resize_crop', 'resize', 'pad', 'none'; got {policy!r}."
        )
    mh, mw = _size2(multiple, "fit")
    if policy == "none" and (x.shape[-2] % mh or x.shape[-1] % mw):
        raise InputError(
            f"fit: input is {x.shape[-2]}x{x.shape[-1]} but the tokenizer needs multiples of "
            f"{mh}x{mw}; use policy='pad' or 'resize_crop'."
        )
    x, pad = pad_to_multiple(x, (mh, mw), mode=pad_mode)
    return Prepared(pixels=x, padding=pad, original_size=original)

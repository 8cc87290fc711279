"""Real media in and out for tokenizers: images, videos, audio as canonical tensors; metrics; plots.

Canonical layouts: image (B, 3, H, W) and video (B, 3, T, H, W) float32 in [-1, 1]; audio (B, C, N)
float32 at the model's sample rate. Submodules load on first use, so ``import modalities`` is cheap
and ``modalities.audio.load(...)`` works without importing the submodule first.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from modalities._sniff import Kind, detect

if TYPE_CHECKING:
    from modalities import audio, chunking, geometry, image, metrics, plots, resample, samples, video

_SUBMODULES = ("audio", "chunking", "geometry", "image", "metrics", "plots", "resample", "samples", "video")

__all__ = [
    "Kind",
    "audio",
    "chunking",
    "detect",
    "geometry",
    "image",
    "metrics",
    "plots",
    "resample",
    "samples",
    "video",
]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"modalities.{name}")
    raise AttributeError(f"module 'modalities' has no attribute {name!r}")

"""Ragged audio batches, shared by the audio families: per-clip lengths and resampling to the model's rate.

A batch is (B, C, N) padded to the longest clip, with `lengths` the valid samples of each clip.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from registry.errors import InputError


def check_lengths(lengths: Sequence[int] | Tensor | None, batch: int, total: int) -> list[int]:
    """One valid sample count per clip, each in [1, total]; all clips are full when `lengths` is None."""
    if lengths is None:
        return [total] * batch
    values = torch.as_tensor(lengths).reshape(-1)
    if values.dtype.is_floating_point or values.dtype == torch.bool or values.numel() != batch:
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


def resample_clips(
    wave: Tensor, counts: list[int], rate: float, target: int, family: str, warn: bool = True
) -> tuple[Tensor, list[int]]:
    """Resample each clip's valid samples from `rate` to `target` Hz and re-pad the batch; new lengths too."""
    from modalities.resample import resample

    if int(rate) != rate or int(rate) <= 0:
        raise InputError(f"sample_rate must be a positive whole number of Hz; got {rate}")
    if warn:
        warnings.warn(
            f"{family} runs at {target} Hz; resampling the {int(rate)} Hz input (band-limited polyphase). "
            f"Pass {target} Hz audio to skip this (modalities.audio.load(path, sample_rate={target})).",
            stacklevel=3,
        )
    clips = [resample(wave[b, :, : counts[b]].float().cpu(), int(rate), target) for b in range(wave.shape[0])]
    new_counts = [int(c.shape[-1]) for c in clips]
    longest = max(new_counts)
    out = torch.stack([F.pad(c, (0, longest - c.shape[-1])) for c in clips])
    return out.to(device=wave.device, dtype=wave.dtype), new_counts

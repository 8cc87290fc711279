"""Band-limited sample-rate conversion with a Kaiser-windowed polyphase filter.

The ratio is reduced to up/down integers and the signal is filtered with one long low-pass FIR,
applied polyphase by `scipy.signal.resample_poly`. The filter is designed here (not scipy's default
window) for ~100 dB stop-band rejection with the pass band ending at 95% of the lower Nyquist
frequency and the stop band starting exactly at it, so nothing aliases and a round trip such as
44.1 kHz -> 24 kHz -> 44.1 kHz keeps in-band tones above 60 dB SNR.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, TypeVar

import numpy as np
import torch
from scipy import signal

from modalities._common import check_finite
from registry.errors import ConfigError, InputError

Quality = Literal["high", "medium", "fast"]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

_QUALITY = {
    # stop-band attenuation in dB, pass-band edge as a fraction of the lower Nyquist frequency
    "high": (100.0, 0.95),
    "medium": (80.0, 0.90),
    "fast": (60.0, 0.85),
}


def ratio(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """(up, down), the reduced integer ratio new_rate / orig_rate."""
    g = math.gcd(int(orig_rate), int(new_rate))
    return int(new_rate) // g, int(orig_rate) // g


@lru_cache(maxsize=32)
def kaiser_lowpass(up: int, down: int, quality: Quality = "high") -> np.ndarray:
    """The anti-aliasing / anti-imaging FIR for an up/down resampler, with unit DC gain.

    `scipy.signal.resample_poly` multiplies custom taps by `up` itself to make up for the zeros it
    inserts, so the taps here are left at unit gain.

    Frequencies are relative to the upsampled rate's Nyquist frequency, where the lower of the two
    Nyquist frequencies sits at 1 / max(up, down).
    """
    if quality not in _QUALITY:
        raise ConfigError(f"resample quality must be one of {sorted(_QUALITY)}, got {quality!r}.")
    atten, passband = _QUALITY[quality]
    edge = 1.0 / max(up, down)
    width = (1.0 - passband) * edge
    numtaps, beta = signal.kaiserord(atten, width)
    numtaps |= 1  # odd length: a symmetric filter with an integer delay
    taps = signal.firwin(numtaps, cutoff=edge * (1.0 + passband) / 2.0, window=("kaiser", beta))
    return taps.astype(np.float64)


def resample(
    x: ArrayT, orig_rate: int, new_rate: int, *, axis: int = -1, quality: Quality = "high"
) -> ArrayT:
    """Resample `x` along `axis` from `orig_rate` to `new_rate` Hz.

    Accepts numpy arrays and torch tensors (computed in float64 on the CPU, returned as float32 on the
    input's device for tensors, float64/float32 for arrays as given). Output length is
    ceil(n * new_rate / orig_rate).
    """
    if int(orig_rate) <= 0 or int(new_rate) <= 0:
        raise InputError(f"sample rates must be positive integers, got {orig_rate} -> {new_rate}.")
    if int(orig_rate) != orig_rate or int(new_rate) != new_rate:
        raise InputError(f"sample rates must be whole numbers of Hz, got {orig_rate} -> {new_rate}.")
    is_torch = isinstance(x, torch.Tensor)
    if is_torch:
        device = x.device
        arr = x.detach().cpu().double().numpy()
    else:
        arr = np.asarray(x)
    check_finite(arr, "audio to resample")
    if arr.shape[axis] == 0:
        raise InputError("cannot resample an empty signal (0 samples).")
    up, down = ratio(orig_rate, new_rate)
    if up == down:
        out = arr.astype(np.float64, copy=True)
    else:
        taps = kaiser_lowpass(up, down, quality)
        out = signal.resample_poly(arr.astype(np.float64), up, down, axis=axis, window=taps)
    if is_torch:
        return torch.from_numpy(np.ascontiguousarray(out)).float().to(device)  # type: ignore[return-value]
    return out.astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32)  # type: ignore[return-value]

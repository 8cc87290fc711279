"""Sample-rate conversion for the torch-free runtime: the filter of `modalities.resample`, in numpy/scipy.

`modalities.resample` imports torch, so the runtime restates its design (Kaiser-windowed low-pass,
"high" quality: 100 dB stop band, pass band to 95% of the lower Nyquist frequency, applied by
`scipy.signal.resample_poly`); a test keeps the two in agreement.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from export.errors import InputError

_ATTENUATION_DB = 100.0
_PASSBAND = 0.95


@lru_cache(maxsize=32)
def _lowpass(up: int, down: int) -> np.ndarray:
    from scipy import signal

    edge = 1.0 / max(up, down)
    numtaps, beta = signal.kaiserord(_ATTENUATION_DB, (1.0 - _PASSBAND) * edge)
    numtaps |= 1
    return signal.firwin(numtaps, cutoff=edge * (1.0 + _PASSBAND) / 2.0, window=("kaiser", beta))


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample the last axis from `orig_rate` to `new_rate` Hz; float32 out, ceil(n * new / orig) samples."""
    if int(orig_rate) != orig_rate or int(orig_rate) <= 0:
        raise InputError(f"sample_rate must be a positive whole number of Hz; got {orig_rate}")
    g = math.gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // g, int(orig_rate) // g
    if up == down:
        return np.asarray(x, dtype=np.float32)
    from scipy import signal

    out = signal.resample_poly(np.asarray(x, dtype=np.float64), up, down, axis=-1, window=_lowpass(up, down))
    return out.astype(np.float32)

"""Reconstruction metrics for tokenizers: PSNR/SSIM for pixels, SI-SNR/STFT/mel/PESQ/STOI for audio,
and codebook usage for the tokens themselves.

Every function takes canonical tensors (images and videos in [-1, 1], so the default data range is 2)
and returns one value per batch item, computed in float64 so that scores are comparable across
devices and precisions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modalities._common import check_finite
from modalities.resample import resample
from registry.errors import BackendError, InputError

STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))
"""(n_fft, hop, window) triples of the multi-resolution STFT distance, as in Parallel WaveGAN."""


def _pair(x: Any, y: Any, what: str, min_ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 tensors of one shape with a batch axis, checked for NaN/Inf."""
    a = torch.as_tensor(x).detach().double()
    b = torch.as_tensor(y).detach().double().to(a.device)
    if a.shape != b.shape:
        raise InputError(
            f"{what}: the two inputs must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if a.ndim == min_ndim - 1:
        a, b = a[None], b[None]
    if a.ndim < min_ndim:
        raise InputError(
            f"{what}: expected at least {min_ndim} axes with the batch first, got {tuple(a.shape)}."
        )
    check_finite(a, f"{what} (first input)")
    check_finite(b, f"{what} (second input)")
    return a, b


# --------------------------------------------------------------------------------------------- pixels


def psnr(x: Any, y: Any, *, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per item of (B, C, H, W) or (B, C, T, H, W); inf when identical."""
    a, b = _pair(x, y, "psnr", 4)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


@lru_cache(maxsize=8)
def _gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: Any,
    y: Any,
    *,
    data_range: float = 2.0,
    sigma: float = 1.5,
    win_size: int = 11,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per item, averaged over channels (and frames).

    Gaussian window (sigma 1.5, 11 taps), population covariances, statistics only where the window
    fits inside the image, i.e. ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False)``.
    """
    a, b = _pair(x, y, "ssim", 4)
    if a.ndim == 5:  # video: score every frame as an image
        bsz, c, t = a.shape[:3]
        per_frame = ssim(
            a.transpose(1, 2).reshape(bsz * t, c, *a.shape[3:]),
            b.transpose(1, 2).reshape(bsz * t, c, *b.shape[3:]),
            data_range=data_range,
            sigma=sigma,
            win_size=win_size,
            k1=k1,
            k2=k2,
        )
        return per_frame.reshape(bsz, t).mean(dim=1)
    if a.ndim != 4:
        raise InputError(f"ssim: expected (B, C, H, W) or (B, C, T, H, W), got {tuple(a.shape)}.")
    h, w = a.shape[-2:]
    if min(h, w) < win_size:
        raise InputError(
            f"ssim: images are {h}x{w}, smaller than the {win_size}x{win_size} window; "
            "pass a smaller win_size or use larger images."
        )
    g = _gaussian_taps(win_size, sigma).to(a.device)
    bsz, c = a.shape[:2]

    def blur(z: torch.Tensor) -> torch.Tensor:
        z = z.reshape(bsz * c, 1, *z.shape[-2:])
        z = F.conv2d(z, g.view(1, 1, -1, 1))
        return F.conv2d(z, g.view(1, 1, 1, -1))

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.reshape(bsz, c, -1).mean(dim=(1, 2))


# --------------------------------------------------------------------------------------------- audio


def si_snr(estimate: Any, reference: Any, *, eps: float = 1e-12) -> torch.Tensor:
    """Scale-invariant SNR in dB per item of (B, C, N), averaged over channels (both made zero-mean)."""
    est, ref = _pair(estimate, reference, "si_snr", 3)
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * ref
    noise = est - target
    ratio = (target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)
    return (10.0 * torch.log10(ratio)).mean(dim=-1)


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """|STFT| of (B, C, N) with a periodic Hann window, centred frames: (B, C, F, frames)."""
    window = torch.hann_window(win, periodic=True, dtype=x.dtype, device=x.device)
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[-1] <= n_fft // 2:
        raise InputError(f"signal of {flat.shape[-1]} samples is too short for an STFT with n_fft={n_fft}.")
    spec = torch.stft(
        flat,
        n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.abs().reshape(*x.shape[:-1], *spec.shape[-2:])


def stft_distance(
    estimate: Any,
    reference: Any,
    *,
    resolutions: Sequence[tuple[int, int, int]] = STFT_RESOLUTIONS,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Multi-resolution STFT distance per item: mean over resolutions of spectral convergence
    ``||R| - |E||_F / ||R||_F`` plus log-magnitude L1 ``mean|log|R| - log|E||`` (Yamamoto et al. 2020)."""
    est, ref = _pair(estimate, reference, "stft_distance", 3)
    total = torch.zeros(est.shape[0], dtype=torch.float64, device=est.device)
    for n_fft, hop, win in resolutions:
        me, mr = _magnitude(est, n_fft, hop, win), _magnitude(ref, n_fft, hop, win)
        sc = (mr - me).flatten(1).norm(dim=1) / mr.flatten(1).norm(dim=1).clamp_min(eps)
        log_l1 = (torch.log(mr.clamp_min(eps)) - torch.log(me.clamp_min(eps))).abs().flatten(1).mean(dim=1)
        total += sc + log_l1
    return total / len(resolutions)


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default, htk=False)."""
    f = np.asarray(freq, dtype=np.float64)
    linear = f * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    m = np.asarray(mel, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((m - 15.0) * (math.log(6.4) / 27.0)), m * 200.0 / 3.0)


@lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the Slaney mel scale, area-normalised (Slaney norm)."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2.0:
        raise InputError(f"mel filterbank needs 0 <= fmin < fmax <= sample_rate / 2, got {fmin}, {fmax}.")
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)
    return torch.from_numpy(weights)


def log_mel(
    x: torch.Tensor,
    sample_rate: int,
    *,
    n_fft: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Natural-log mel magnitude spectrogram (..., n_mels, frames) of (B, C, N) audio."""
    mag = _magnitude(x, n_fft, hop, n_fft)
    fb = mel_filterbank(int(sample_rate), n_fft, n_mels, fmin, fmax).to(mag)
    return torch.log(torch.einsum("mf,...ft->...mt", fb, mag).clamp_min(eps))


def mel_distance(
    estimate: Any,
    reference: Any,
    sample_rate: int,
    *,
    n_fft: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Mean absolute difference of log-mel spectrograms per item (the 'mel distance' codecs report)."""
    est, ref = _pair(estimate, reference, "mel_distance", 3)
    kwargs = {"n_fft": n_fft, "hop": hop, "n_mels": n_mels, "fmin": fmin, "fmax": fmax, "eps": eps}
    diff = log_mel(est, sample_rate, **kwargs) - log_mel(ref, sample_rate, **kwargs)
    return diff.abs().flatten(1).mean(dim=1)


def _mono_items(estimate: Any, reference: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    est, ref = _pair(estimate, reference, what, 3)
    return est.mean(dim=1).cpu().numpy(), ref.mean(dim=1).cpu().numpy()


def pesq(estimate: Any, reference: Any, sample_rate: int, *, mode: str = "wb") -> torch.Tensor:
    """PESQ (ITU-T P.862) per item through the optional `pesq` package; audio is resampled to 16 kHz
    ('wb') or 8 kHz ('nb') and downmixed to mono first."""
    try:
        from pesq import pesq as _pesq
    except ImportError as err:
        raise BackendError(
            "PESQ needs the optional package 'pesq' (pip install pesq, or the [metrics] extra)."
        ) from err
    if mode not in ("wb", "nb"):
        raise InputError(f"pesq mode must be 'wb' (16 kHz) or 'nb' (8 kHz), got {mode!r}.")
    rate = 16000 if mode == "wb" else 8000
    est, ref = _mono_items(estimate, reference, "pesq")
    if int(sample_rate) != rate:
        est, ref = resample(est, int(sample_rate), rate), resample(ref, int(sample_rate), rate)
    return torch.tensor(
        [float(_pesq(rate, r, e, mode)) for r, e in zip(ref, est, strict=True)], dtype=torch.float64
    )


def stoi(estimate: Any, reference: Any, sample_rate: int, *, extended: bool = False) -> torch.Tensor:
    """(E)STOI intelligibility per item through the optional `pystoi` package, on the mono downmix."""
    try:
        from pystoi import stoi as _stoi
    except ImportError as err:
        raise BackendError(
            "STOI needs the optional package 'pystoi' (pip install pystoi, or the [metrics] extra)."
        ) from err
    est, ref = _mono_items(estimate, reference, "stoi")
    scores = [float(_stoi(r, e, int(sample_rate), extended=extended)) for r, e in zip(ref, est, strict=True)]
    return torch.tensor(scores, dtype=torch.float64)


# --------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class CodebookUsage:
    """How a set of token ids spreads over a codebook."""

    counts: torch.Tensor
    used: int
    usage: float
    perplexity: float
    entropy_bits: float


def codebook_usage(ids: Any, codebook_size: int, histogram: bool = True) -> CodebookUsage:
    """Counts per code, number and fraction of codes used, perplexity exp(H) and entropy in bits.

    `histogram=False` leaves `counts` as the counts of the used codes only (ascending id), which keeps a
    training step cheap with vocabularies of 2^20 and more, where a full histogram would dominate it.
    """
    t = torch.as_tensor(ids)
    if t.is_floating_point() or t.is_complex():
        raise InputError(f"codebook_usage needs integer ids, got dtype {t.dtype}.")
    if codebook_size < 1:
        raise InputError(f"codebook_size must be >= 1, got {codebook_size}.")
    flat = t.reshape(-1).long().cpu()
    if flat.numel() == 0:
        raise InputError("codebook_usage got no ids.")
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= codebook_size:
        raise InputError(
            f"token ids span [{lo}, {hi}] but the codebook has {codebook_size} entries "
            f"(valid ids 0..{codebook_size - 1})."
        )
    used_counts = torch.unique(flat, return_counts=True)[1]
    counts = torch.bincount(flat, minlength=codebook_size) if histogram else used_counts
    nz = used_counts.double() / used_counts.sum()
    entropy = float(-(nz * nz.log()).sum())
    used = int(used_counts.numel())
    return CodebookUsage(
        counts=counts,
        used=used,
        usage=used / codebook_size,
        perplexity=math.exp(entropy),
        entropy_bits=entropy / math.log(2.0),
    )

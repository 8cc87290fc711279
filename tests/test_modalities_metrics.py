"""Metrics, each checked against an independent reference (scikit-image, numpy float64, the packages)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modalities import audio, image, metrics, samples
from registry.errors import InputError

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is the reference for PSNR/SSIM")


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    """Chelsea and two distortions of it (noise, blur), as a batch of 2 against the clean pair."""
    clean = image.load(samples.path("chelsea.png"))[..., :160, :200].double()
    gen = torch.Generator().manual_seed(0)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool2d(clean, 5, stride=1, padding=2, count_include_pad=False)
    return torch.cat([clean, clean]), torch.cat([noisy, blurred])


def test_psnr_matches_skimage():
    ref, test = _images()
    ours = metrics.psnr(test, ref)
    for i in range(2):
        expected = skimage_metrics.peak_signal_noise_ratio(ref[i].numpy(), test[i].numpy(), data_range=2.0)
        assert float(ours[i]) == pytest.approx(expected, abs=1e-9)
    assert math.isinf(float(metrics.psnr(ref, ref)[0]))


def test_ssim_matches_skimage():
    ref, test = _images()
    ours = metrics.ssim(test, ref)
    for i in range(2):
        expected = skimage_metrics.structural_similarity(
            ref[i].numpy(),
            test[i].numpy(),
            data_range=2.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert float(ours[i]) == pytest.approx(expected, abs=1e-7)
    assert float(metrics.ssim(ref, ref)[0]) == pytest.approx(1.0, abs=1e-12)


def test_ssim_and_psnr_on_video_average_frames():
    ref, test = _images()
    vid_ref, vid_test = ref[None].transpose(1, 2), test[None].transpose(1, 2)  # (1, 3, 2, H, W)
    assert float(metrics.ssim(vid_test, vid_ref)[0]) == pytest.approx(float(metrics.ssim(test, ref).mean()))
    mse = (test - ref).pow(2).mean()
    assert float(metrics.psnr(vid_test, vid_ref)[0]) == pytest.approx(float(10 * torch.log10(4 / mse)))


def _speech_pair() -> tuple[torch.Tensor, torch.Tensor]:
    clean = audio.load(samples.path("arctic_a0009.wav"))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)) * 0.02
    return clean, clean + noise


def _si_snr_reference(est: np.ndarray, ref: np.ndarray) -> float:
    est = est.astype(np.float64) - est.mean()
    ref = ref.astype(np.float64) - ref.mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    return float(10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2)))


def test_si_snr_matches_float64_formula_and_is_scale_invariant():
    clean, noisy = _speech_pair()
    ours = float(metrics.si_snr(noisy, clean)[0])
    assert ours == pytest.approx(_si_snr_reference(noisy[0, 0].numpy(), clean[0, 0].numpy()), abs=1e-6)
    assert float(metrics.si_snr(noisy * 3.7, clean)[0]) == pytest.approx(ours, abs=1e-6)
    assert float(metrics.si_snr(clean, clean)[0]) > 100


def _numpy_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| with explicit framing: reflect-pad n_fft/2, periodic Hann, rfft per frame."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(count)], axis=1)
    return np.abs(np.fft.rfft(frames, axis=0))


def test_stft_distance_matches_numpy_reference():
    clean, noisy = _speech_pair()
    resolutions = ((512, 128, 512), (1024, 256, 1024))
    ours = float(metrics.stft_distance(noisy, clean, resolutions=resolutions)[0])
    total = 0.0
    for n_fft, hop, _ in resolutions:
        mr = _numpy_magnitude(clean[0, 0].double().numpy(), n_fft, hop)
        me = _numpy_magnitude(noisy[0, 0].double().numpy(), n_fft, hop)
        sc = np.linalg.norm(mr - me) / np.linalg.norm(mr)
        log_l1 = np.mean(np.abs(np.log(np.maximum(mr, 1e-7)) - np.log(np.maximum(me, 1e-7))))
        total += sc + log_l1
    assert ours == pytest.approx(total / len(resolutions), rel=1e-9)
    assert float(metrics.stft_distance(clean, clean)[0]) == 0.0


def _slaney_filterbank_reference(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney mel filters written out one filter and one bin at a time."""

    def to_mel(f: float) -> float:
        return f / (200.0 / 3) if f < 1000 else 15.0 + math.log(f / 1000.0) / (math.log(6.4) / 27)

    def to_hz(m: float) -> float:
        return m * (200.0 / 3) if m < 15 else 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27)

    top = to_mel(rate / 2)
    edges = [to_hz(top * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * rate / n_fft
            if lo < f <= mid:
                bank[m, k] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                bank[m, k] = (hi - f) / (hi - mid)
        bank[m] *= 2.0 / (hi - lo)
    return bank


def test_mel_scale_and_filterbank():
    assert float(metrics.hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(metrics.hz_to_mel(440.0)) == pytest.approx(6.6)
    freqs = np.array([50.0, 999.0, 1000.0, 4000.0, 11025.0])
    assert np.allclose(metrics.mel_to_hz(metrics.hz_to_mel(freqs)), freqs)
    ours = metrics.mel_filterbank(16000, 512, 40).numpy()
    assert np.allclose(ours, _slaney_filterbank_reference(16000, 512, 40), atol=1e-12)


def test_mel_distance_matches_numpy_reference():
    clean, noisy = _speech_pair()
    rate, n_fft, hop, n_mels = 16000, 1024, 256, 64
    ours = float(metrics.mel_distance(noisy, clean, rate, n_fft=n_fft, hop=hop, n_mels=n_mels)[0])
    bank = _slaney_filterbank_reference(rate, n_fft, n_mels)
    ref_mel = np.log(np.maximum(bank @ _numpy_magnitude(clean[0, 0].double().numpy(), n_fft, hop), 1e-5))
    est_mel = np.log(np.maximum(bank @ _numpy_magnitude(noisy[0, 0].double().numpy(), n_fft, hop), 1e-5))
    assert ours == pytest.approx(float(np.mean(np.abs(ref_mel - est_mel))), rel=1e-9)
    assert float(metrics.mel_distance(clean, clean, rate)[0]) == 0.0


def test_pesq_matches_package():
    pesq_pkg = pytest.importorskip("pesq", reason="PESQ is an optional package (pip install pesq)")
    clean, noisy = _speech_pair()
    ours = float(metrics.pesq(noisy, clean, 16000)[0])
    direct = pesq_pkg.pesq(16000, clean[0, 0].double().numpy(), noisy[0, 0].double().numpy(), "wb")
    assert ours == pytest.approx(direct, abs=1e-9)
    assert float(metrics.pesq(clean, clean, 16000)[0]) > 4.4 > ours
    resampled = float(
        metrics.pesq(
            audio.load(samples.path("arctic_a0009.wav"), sample_rate=24000),
            audio.load(samples.path("arctic_a0009.wav"), sample_rate=24000),
            24000,
        )[0]
    )
    assert resampled > 4.4


def test_stoi_matches_package():
    pystoi = pytest.importorskip("pystoi", reason="STOI is an optional package (pip install pystoi)")
    clean, noisy = _speech_pair()
    ours = float(metrics.stoi(noisy, clean, 16000)[0])
    direct = pystoi.stoi(clean[0, 0].double().numpy(), noisy[0, 0].double().numpy(), 16000, extended=False)
    assert ours == pytest.approx(direct, abs=1e-9)
    assert float(metrics.stoi(clean, clean, 16000)[0]) == pytest.approx(1.0, abs=1e-6)


def test_codebook_usage_matches_numpy():
    ids = torch.from_numpy(np.random.default_rng(0).zipf(1.5, size=(4, 256)) % 64)
    usage = metrics.codebook_usage(ids, 64)
    counts = np.bincount(ids.numpy().ravel(), minlength=64)
    p = counts[counts > 0] / counts.sum()
    entropy = -np.sum(p * np.log(p))
    assert np.array_equal(usage.counts.numpy(), counts)
    assert usage.used == int((counts > 0).sum()) and usage.usage == pytest.approx(usage.used / 64)
    assert usage.perplexity == pytest.approx(float(np.exp(entropy)), rel=1e-12)
    assert usage.entropy_bits == pytest.approx(float(entropy / np.log(2)), rel=1e-12)
    assert metrics.codebook_usage(torch.arange(32).repeat(3), 32).perplexity == pytest.approx(32.0)
    assert metrics.codebook_usage(torch.zeros(10, dtype=torch.long), 8).perplexity == pytest.approx(1.0)
    # Without the full histogram (huge vocabularies in training logs): the same statistics, used codes only.
    cheap = metrics.codebook_usage(ids, 64, histogram=False)
    assert np.array_equal(cheap.counts.numpy(), counts[counts > 0])
    assert (cheap.used, cheap.usage, cheap.perplexity) == (usage.used, usage.usage, usage.perplexity)
    huge = metrics.codebook_usage(torch.tensor([3, 1 << 40, 3]), 1 << 41, histogram=False)
    two_to_one = -(2 / 3) * np.log(2 / 3) - (1 / 3) * np.log(1 / 3)
    assert huge.used == 2 and huge.perplexity == pytest.approx(float(np.exp(two_to_one)))


def test_metric_input_errors():
    with pytest.raises(InputError, match="one shape"):
        metrics.psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(InputError, match="NaN"):
        metrics.ssim(torch.full((1, 3, 16, 16), float("nan")), torch.zeros(1, 3, 16, 16))
    with pytest.raises(InputError, match="smaller than the 11x11 window"):
        metrics.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError, match="valid ids 0..7"):
        metrics.codebook_usage(torch.tensor([0, 8]), 8)
    with pytest.raises(InputError, match="integer"):
        metrics.codebook_usage(torch.tensor([0.5]), 8)

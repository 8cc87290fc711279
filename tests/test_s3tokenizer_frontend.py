"""The shared log-mel front end (zoo/layers/mel.py) that S3Tokenizer, XY-Tokenizer and TaDiCodec use.

Checked against independent references written here: librosa's mel formulas in float64 and
`torch.stft`, plus the filterbank upstream S3Tokenizer ships (from the parity fixture, when present).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from registry.errors import ConfigError, InputError
from tests.parity import case_path
from zoo.layers.mel import LogMel, mel_filterbank


def slaney_reference(sample_rate: int, n_fft: int, n_mels: int, f_max: float) -> np.ndarray:
    """librosa.filters.mel(htk=False, norm='slaney') written out in float64 (no float32 rounding)."""
    def to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        out = f / (200.0 / 3)
        log_region = f >= 1000.0
        out[log_region] = 15.0 + np.log(f[log_region] / 1000.0) / (np.log(6.4) / 27.0)
        return out

    def to_hz(m: np.ndarray) -> np.ndarray:
        out = m * (200.0 / 3)
        log_region = m >= 15.0
        out[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log_region] - 15.0))
        return out

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(np.array([0.0]))[0], to_mel(np.array([f_max]))[0], n_mels + 2))
    out = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lower = (freqs - edges[i]) / (edges[i + 1] - edges[i])
        upper = (edges[i + 2] - freqs) / (edges[i + 2] - edges[i + 1])
        out[i] = np.maximum(0, np.minimum(lower, upper)) * 2.0 / (edges[i + 2] - edges[i])
    return out


@pytest.mark.parametrize(("rate", "n_fft", "n_mels"), [(16000, 400, 128), (16000, 400, 80), (24000, 1920, 128)])
def test_filterbank_matches_the_slaney_formula(rate: int, n_fft: int, n_mels: int) -> None:
    ours = mel_filterbank(rate, n_fft, n_mels, f_max=rate / 2).double().numpy()
    ref = slaney_reference(rate, n_fft, n_mels, rate / 2)
    assert ours.shape == (n_mels, n_fft // 2 + 1)
    assert np.abs(ours - ref).max() <= 1e-7 * ref.max()


def test_filterbank_equals_upstream_s3tokenizer_asset() -> None:
    path = case_path("s3tokenizer_v2") / "io.safetensors"
    if not path.is_file():
        pytest.skip(f"parity fixture {path} is absent (it carries upstream's bundled mel_filters)")
    from safetensors.torch import load_file

    upstream = load_file(str(path))["mel_filters"]
    assert torch.equal(mel_filterbank(16000, 400, 128), upstream)


def whisper_reference(wave: torch.Tensor, n_mels: int) -> torch.Tensor:
    """Whisper's log-mel with torch.stft, in float64."""
    x = wave.double()
    stft = torch.stft(x, 400, 160, window=torch.hann_window(400, dtype=torch.float64), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filterbank(16000, 400, n_mels).double() @ power
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.amax(dim=(-2, -1), keepdim=True) - 8.0)
    return (log + 4.0) / 4.0


def test_whisper_log_mel_matches_torch_stft_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    wave = torch.randn(2, 16000 + 123, generator=gen) * 0.1
    wave[1] *= 0.01  # each item is floored by its own maximum
    ours = LogMel(n_mels=128)(wave)
    ref = whisper_reference(wave, 128)
    assert ours.shape == (2, 128, (16000 + 123) // 160)
    assert (ours.double() - ref).abs().max() < 1e-4


def test_tadicodec_style_options() -> None:
    """Magnitude spectrum, explicit reflect padding without centring, natural log, mean/std normalisation."""
    gen = torch.Generator().manual_seed(1)
    wave = torch.randn(1, 24000, generator=gen) * 0.1
    front = LogMel(sample_rate=24000, n_fft=1920, hop_length=480, n_mels=128, f_max=12000, center=False, pad=720,
                   drop_last=False, spectrum="magnitude", magnitude_eps=1e-9, log="ln", clamp_min=1e-5,
                   dynamic_range=None, mean=-4.92, std=math.sqrt(8.14))
    padded = torch.nn.functional.pad(wave.double()[:, None], (720, 720), mode="reflect")[:, 0]
    stft = torch.stft(padded, 1920, 480, window=torch.hann_window(1920, dtype=torch.float64), center=False,
                      return_complex=True)
    magnitude = torch.sqrt(stft.real**2 + stft.imag**2 + 1e-9)
    mel = mel_filterbank(24000, 1920, 128, f_max=12000).double() @ magnitude
    ref = (torch.clamp(mel, min=1e-5).log() + 4.92) / math.sqrt(8.14)
    ours = front(wave)
    assert ours.shape == ref.shape == (1, 128, 50) and front.num_frames(24000) == 50
    assert (ours.double() - ref).abs().max() < 1e-4


def test_clips_are_featurised_alone_and_padded_with_the_given_value() -> None:
    front = LogMel(n_mels=80)
    gen = torch.Generator().manual_seed(2)
    clips = [torch.randn(16000, generator=gen), torch.randn(4000, generator=gen) * 0.3]
    batch, frames = front.forward_clips(clips, pad_value=0.0)
    assert frames.tolist() == [100, 25]
    assert torch.equal(batch[1, :, :25], front(clips[1][None])[0])
    assert bool((batch[1, :, 25:] == 0).all())


def test_short_and_bad_configs_are_refused() -> None:
    front = LogMel()
    assert front.min_samples == 201 and front.num_frames(201) == 1
    with pytest.raises(InputError, match="at least 201"):
        front.forward_clips([torch.zeros(200)])
    with pytest.raises(ConfigError):
        LogMel(spectrum="complex")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        mel_filterbank(16000, 400, 80, f_min=9000.0)

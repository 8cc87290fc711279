"""Log-mel spectrogram front ends (Whisper style and its relatives), exportable to ONNX.

The STFT is a strided 1-D convolution with a windowed DFT basis instead of `torch.stft`: it exports
to ONNX without complex tensors and matches `torch.stft` to float32 rounding. The mel filterbank is
computed here (librosa's formulas, float64, rounded as librosa rounds), not read from upstream data.

Whisper / S3Tokenizer / XY-Tokenizer (16 kHz, n_fft 400, hop 160):
    periodic Hann, centre reflect padding, drop the last frame, power |X|^2, Slaney mel,
    log10(clamp(., 1e-10)), floor at (max over the clip) - 8, then (x + 4) / 4.
TaDiCodec-style (24 kHz, n_fft 1920, hop 480): reflect padding (n_fft - hop) / 2 without centring,
    magnitude sqrt(re^2 + im^2 + 1e-9), natural log of clamp(., 1e-5), then (x - mean) / std.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.errors import ConfigError, InputError

MelScale = Literal["slaney", "htk"]


# -- mel filterbank ------------------------------------------------------------------------------
def hz_to_mel(freq: np.ndarray | float, scale: MelScale = "slaney") -> np.ndarray:
    """Hertz to mels: HTK's 2595 log10(1 + f/700), or Slaney's linear-below-1-kHz, log-above scale."""
    f = np.asarray(freq, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    step = 200.0 / 3
    knee_hz, knee_mel, log_step = 1000.0, 1000.0 / step, math.log(6.4) / 27.0
    linear = f / step
    logpart = knee_mel + np.log(np.maximum(f, knee_hz) / knee_hz) / log_step
    return np.where(f >= knee_hz, logpart, linear)


def mel_to_hz(mels: np.ndarray | float, scale: MelScale = "slaney") -> np.ndarray:
    m = np.asarray(mels, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    step = 200.0 / 3
    knee_hz, knee_mel, log_step = 1000.0, 1000.0 / step, math.log(6.4) / 27.0
    linear = m * step
    logpart = knee_hz * np.exp(log_step * (np.maximum(m, knee_mel) - knee_mel))
    return np.where(m >= knee_mel, logpart, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: MelScale = "slaney",
    norm: Literal["slaney"] | None = "slaney",
) -> Tensor:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters, as `librosa.filters.mel` computes them.

    Triangles are evaluated in float64 and stored to float32 before the Slaney area normalisation
    (2 / bandwidth) is applied, as librosa does; this reproduces its float32 matrix bit for bit.
    """
    if scale not in ("slaney", "htk"):
        raise ConfigError(f"mel scale must be 'slaney' or 'htk'; got {scale!r}")
    if norm not in ("slaney", None):
        raise ConfigError(f"mel norm must be 'slaney' or None; got {norm!r}")
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ConfigError(f"need 0 <= f_min < f_max <= sample_rate / 2; got f_min={f_min}, f_max={f_max}")
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2), scale)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    if norm == "slaney":
        area = 2.0 / (edges[2:] - edges[:-2])
        weights = (weights * area[:, None]).astype(np.float32)
    return torch.from_numpy(weights)


# -- STFT as a convolution -------------------------------------------------------------------------
def hann_window(length: int, periodic: bool = True) -> Tensor:
    """float64 Hann window (periodic as `torch.hann_window` by default)."""
    n = torch.arange(length, dtype=torch.float64)
    denom = length if periodic else max(length - 1, 1)
    return 0.5 - 0.5 * torch.cos(2 * math.pi * n / denom)


def dft_basis(n_fft: int, window: Tensor) -> Tensor:
    """(2 * (n_fft // 2 + 1), 1, n_fft) conv kernel: windowed cos rows, then windowed -sin rows."""
    bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)
    phase = 2 * math.pi * torch.outer(k, n) / n_fft
    win = window.to(torch.float64)
    if win.numel() < n_fft:  # centred zero-padding of a shorter window, as torch.stft does
        left = (n_fft - win.numel()) // 2
        win = F.pad(win, (left, n_fft - win.numel() - left))
    basis = torch.cat([torch.cos(phase) * win, -torch.sin(phase) * win], dim=0)
    return basis.unsqueeze(1)


class LogMel(nn.Module):
    """Waveform (B, N) or (B, 1, N) -> log-mel (B, n_mels, T); defaults are Whisper's (and S3Tokenizer's).

    Options (all upstream front ends in tokenzoo are one setting of these):
      `center`: reflect-pad n_fft // 2 on both sides (torch.stft(center=True)); otherwise `pad` samples
      of reflect padding on each side (e.g. (n_fft - hop) // 2) or none. `drop_last`: drop the final
      frame (Whisper). `spectrum`: "power" |X|^2 or "magnitude" sqrt(|X|^2 + magnitude_eps).
      `log`: "log10" or "ln" of clamp(., clamp_min). `dynamic_range`: floor each item at its own
      max - dynamic_range (Whisper's 8.0), None to skip. Finally (x - mean) / std (Whisper: mean -4,
      std 4). The filterbank and DFT basis are non-persistent buffers: nothing of this goes in a
      state dict.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 80,
        win_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: MelScale = "slaney",
        mel_norm: Literal["slaney"] | None = "slaney",
        center: bool = True,
        pad: int = 0,
        drop_last: bool = True,
        spectrum: Literal["power", "magnitude"] = "power",
        magnitude_eps: float = 0.0,
        log: Literal["log10", "ln"] = "log10",
        clamp_min: float = 1e-10,
        dynamic_range: float | None = 8.0,
        mean: float = -4.0,
        std: float = 4.0,
    ) -> None:
        super().__init__()
        if spectrum not in ("power", "magnitude"):
            raise ConfigError(f"spectrum must be 'power' or 'magnitude'; got {spectrum!r}")
        if log not in ("log10", "ln"):
            raise ConfigError(f"log must be 'log10' or 'ln'; got {log!r}")
        if hop_length < 1 or n_fft < 2 or (win_length or n_fft) > n_fft:
            raise ConfigError(f"need hop_length >= 1 and win_length <= n_fft; got {hop_length}, {win_length}, {n_fft}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.center = bool(center)
        self.pad = int(n_fft // 2 if center else pad)
        self.drop_last = bool(drop_last)
        self.spectrum = spectrum
        self.magnitude_eps = float(magnitude_eps)
        self.log = log
        self.clamp_min = float(clamp_min)
        self.dynamic_range = None if dynamic_range is None else float(dynamic_range)
        self.mean = float(mean)
        self.std = float(std)
        window = hann_window(win_length or n_fft)
        self.register_buffer("basis", dft_basis(n_fft, window).float(), persistent=False)
        filters = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, mel_scale, mel_norm)
        self.register_buffer("filters", filters, persistent=False)

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def min_samples(self) -> int:
        """Fewest samples that give one frame (reflect padding needs more samples than it pads)."""
        need_frame = max(self.n_fft - 2 * self.pad + (self.hop_length if self.drop_last else 0), 1)
        return max(need_frame, self.pad + 1)

    def num_frames(self, num_samples: int | Tensor) -> int | Tensor:
        """Frames for a clip of `num_samples` (N // hop for Whisper's settings)."""
        frames = (num_samples + 2 * self.pad - self.n_fft) // self.hop_length + 1
        return frames - 1 if self.drop_last else frames

    # -- compute -----------------------------------------------------------------------------------
    def spectrogram(self, wave: Tensor) -> Tensor:
        """(B, N) -> (B, n_fft // 2 + 1, T) power or magnitude spectrum."""
        x = wave.unsqueeze(1)
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode="reflect")
        spec = F.conv1d(x, self.basis.to(x.dtype), stride=self.hop_length)
        if self.drop_last:
            spec = spec[..., :-1]
        bins = self.n_fft // 2 + 1
        power = spec[:, :bins].square() + spec[:, bins:].square()
        if self.spectrum == "magnitude":
            return torch.sqrt(power + self.magnitude_eps)
        return power

    def forward(self, wave: Tensor) -> Tensor:
        """Waveform (B, N) or (B, 1, N) -> (B, n_mels, T); each item is floored by its own maximum."""
        if wave.dim() == 3:
            wave = wave[:, 0]
        mel = torch.matmul(self.filters.to(wave.dtype), self.spectrogram(wave))
        mel = torch.clamp(mel, min=self.clamp_min)
        mel = torch.log10(mel) if self.log == "log10" else torch.log(mel)
        if self.dynamic_range is not None:
            peak = mel.amax(dim=(1, 2), keepdim=True)
            mel = torch.maximum(mel, peak - self.dynamic_range)
        return (mel - self.mean) / self.std

    def check_length(self, num_samples: int, what: str = "audio") -> None:
        if num_samples < self.min_samples:
            raise InputError(
                f"{what} has {num_samples} samples; the log-mel front end needs at least {self.min_samples} "
                f"({1000 * self.min_samples / self.sample_rate:.1f} ms at {self.sample_rate} Hz). Pass a longer "
                "clip or pad it with silence yourself."
            )

    def forward_clips(self, clips: Sequence[Tensor], pad_value: float = 0.0) -> tuple[Tensor, Tensor]:
        """Clips of different lengths -> ((B, n_mels, T_max), frames (B,) int64), each clip on its own.

        Every clip's log-mel is computed from that clip alone (its own reflect padding and its own max,
        so a clip gives the same features in any batch), then right-padded with `pad_value`.
        """
        mels = []
        for i, clip in enumerate(clips):
            wave = clip.reshape(1, -1)
            self.check_length(wave.shape[-1], what=f"clip {i}")
            mels.append(self(wave)[0])
        frames = torch.tensor([m.shape[-1] for m in mels], dtype=torch.long, device=mels[0].device)
        longest = int(frames.max())
        batch = torch.stack([F.pad(m, (0, longest - m.shape[-1]), value=pad_value) for m in mels])
        return batch, frames


__all__ = ["LogMel", "dft_basis", "hann_window", "hz_to_mel", "mel_filterbank", "mel_to_hz"]

"""STFT and inverse STFT with real-valued tensors only, so both export to ONNX.

`torch.stft` / `torch.istft` / `torch.fft.irfft` work on complex tensors, which neither ONNX exporter
handles. Here the DFT is a matmul (or a strided conv1d) against precomputed cosine/sine bases and the
overlap-add is a sum of shifted hop-sized chunks, so the graphs contain only MatMul/Conv/Pad/Add. (The
inverse STFT still uses `torch.fft.irfft` in eager mode, where it is cheaper; the values agree to float
rounding and the exported graph takes the matmul.)

Padding modes follow Vocos:
  * "center": frames centred on t * hop (input reflect-padded by n_fft // 2 for the STFT; the iSTFT
    trims n_fft // 2 from both ends, like `torch.istft(center=True)`); T frames <-> (T - 1) * hop samples.
  * "same": the iSTFT trims (win_length - hop) // 2 from both ends, so T frames -> T * hop samples;
    the STFT reflect-pads the same amount (Vocos' `MelSpectrogramFeatures(padding="same")`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry.errors import ConfigError

Padding = Literal["center", "same"]
PADDINGS = ("center", "same")


def _exporting() -> bool:
    """True under torch.export / torch.onnx (dynamo) / tracing: use the real-valued DFT there."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_exporting", lambda: False)())


def hann_window(length: int, periodic: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """`torch.hann_window`, computed in float64 then cast (the values Vocos stores)."""
    return torch.hann_window(length, periodic=periodic, dtype=torch.float64).to(dtype)


def _check_padding(padding: str) -> None:
    if padding not in PADDINGS:
        raise ConfigError(f"padding must be one of {PADDINGS}; got {padding!r}")


def _full_window(window: Tensor | None, win_length: int, n_fft: int) -> Tensor:
    """The window zero-padded (centred) to n_fft, as torch.stft/istft place a shorter window."""
    if window is None:
        window = hann_window(win_length)
    if window.numel() != win_length:
        raise ConfigError(f"window has {window.numel()} samples, win_length is {win_length}")
    if win_length > n_fft:
        raise ConfigError(f"win_length ({win_length}) cannot exceed n_fft ({n_fft})")
    left = (n_fft - win_length) // 2
    return F.pad(window.to(torch.float32), (left, n_fft - win_length - left))


def irfft_bases(n_fft: int) -> Tensor:
    """(2 * (n_fft // 2 + 1), n_fft) float64: real-part rows then imaginary-part rows of `irfft`.

    frames = cat([re, im], -1) @ bases equals `torch.fft.irfft(re + 1j * im, n_fft)` (norm "backward"),
    including its convention of ignoring the imaginary part of the DC and Nyquist bins.
    """
    bins = n_fft // 2 + 1
    k = torch.arange(bins, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(n_fft, dtype=torch.float64).unsqueeze(0)
    angle = 2.0 * math.pi * ((k * n) % n_fft) / n_fft
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    cos = weight * torch.cos(angle) / n_fft
    sin = -weight * torch.sin(angle) / n_fft
    sin[0] = 0.0
    if n_fft % 2 == 0:
        sin[-1] = 0.0
    return torch.cat([cos, sin], 0)


def rfft_bases(n_fft: int) -> Tensor:
    """(2 * (n_fft // 2 + 1), n_fft) float64: rows giving Re and Im of `torch.fft.rfft` of a frame."""
    bins = n_fft // 2 + 1
    k = torch.arange(bins, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(n_fft, dtype=torch.float64).unsqueeze(0)
    angle = 2.0 * math.pi * ((k * n) % n_fft) / n_fft
    return torch.cat([torch.cos(angle), -torch.sin(angle)], 0)


def overlap_add(frames: Tensor, hop: int) -> Tensor:
    """Sum frames (B, T, N) placed every `hop` samples -> (B, (T - 1) * hop + N).

    Each frame is cut into ceil(N / hop) hop-long chunks; chunk r of frame t lands on output block
    t + r, so the whole overlap-add is ceil(N / hop) shifted adds (exportable, no fold/col2im).
    """
    batch, count, size = frames.shape
    chunks = -(-size // hop)
    frames = F.pad(frames, (0, chunks * hop - size)).reshape(batch, count, chunks, hop)
    out = F.pad(frames[:, :, 0], (0, 0, 0, chunks - 1))
    for r in range(1, chunks):
        out = out + F.pad(frames[:, :, r], (0, 0, r, chunks - 1 - r))
    return out.reshape(batch, (count + chunks - 1) * hop)[:, : (count - 1) * hop + size]


class InverseSTFT(nn.Module):
    """iSTFT of a one-sided spectrum given as real and imaginary parts (B, T, n_fft // 2 + 1).

    Inverse DFT (one matmul against `irfft_bases` when exporting; `torch.fft.irfft` in eager mode, which
    is faster and gives the same values to float rounding), window, overlap-add, division by the summed
    squared window, and the padding mode's trim. `window` is a persistent buffer (upstream checkpoints
    store it); the DFT bases are rebuilt from `n_fft`, never saved.
    """

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        win_length: int | None = None,
        padding: Padding = "same",
        window: Tensor | None = None,
    ) -> None:
        super().__init__()
        _check_padding(padding)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.win_length = int(win_length or n_fft)
        self.padding = padding
        if padding == "same" and self.win_length != self.n_fft:
            raise ConfigError("padding='same' needs win_length == n_fft (as Vocos' ISTFT)")
        base = hann_window(self.win_length) if window is None else window.to(torch.float32)
        self.register_buffer("window", base.clone())
        self.register_buffer("bases", irfft_bases(self.n_fft).to(torch.float32), persistent=False)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def trim(self) -> int:
        if self.padding == "center":
            return self.n_fft // 2
        return (self.win_length - self.hop_length) // 2

    def output_length(self, frames: int) -> int:
        return (frames - 1) * self.hop_length + self.n_fft - 2 * self.trim

    def forward(self, real: Tensor, imag: Tensor, lengths: Tensor | None = None) -> Tensor:
        """real, imag (B, T, bins) -> waveform (B, output_length(T)).

        `lengths` (B,) valid frames per item of a ragged batch: item b's first output_length(lengths[b])
        samples are what its frames alone give (frames past its end are left out of the sum and envelope).
        """
        if _exporting() or real.dtype not in (torch.float32, torch.float64):
            frames = torch.cat([real, imag], -1) @ self.bases.to(real.dtype)
        else:  # eager: the FFT is cheaper than the dense DFT and is what upstream computes
            frames = torch.fft.irfft(torch.complex(real, imag), self.n_fft, dim=-1)
        window = _full_window(self.window, self.win_length, self.n_fft).to(frames.dtype)
        squared = window.square().expand(1, frames.shape[1], -1)
        if lengths is not None:
            steps = torch.arange(frames.shape[1], device=frames.device)
            keep = (steps.unsqueeze(0) < lengths.reshape(-1, 1).to(frames.device)).unsqueeze(-1).to(frames.dtype)
            frames = frames * keep
            squared = squared * keep
        audio = overlap_add(frames * window, self.hop_length)
        envelope = overlap_add(squared, self.hop_length)
        if lengths is not None:  # past an item's end the envelope is 0: keep those (unused) samples finite
            envelope = torch.where(envelope > 1e-11, envelope, torch.ones_like(envelope))
        trim = self.trim
        end = audio.shape[-1] - trim
        return audio[:, trim:end] / envelope[:, trim:end]

    def extra_repr(self) -> str:
        return (
            f"n_fft={self.n_fft}, hop_length={self.hop_length}, win_length={self.win_length}, "
            f"padding={self.padding!r}"
        )


class ISTFTHead(nn.Module):
    """Vocos' ISTFTHead: Linear dim -> n_fft + 2, log-magnitude and phase, inverse STFT.

    magnitude = exp(x[:bins]) clipped at `max_magnitude` (Vocos' 1e2 safeguard), spectrum =
    magnitude * (cos(phase) + i sin(phase)); input (B, T, dim), output (B, samples).
    """

    def __init__(
        self,
        dim: int,
        n_fft: int,
        hop_length: int,
        padding: Padding = "same",
        win_length: int | None = None,
        max_magnitude: float = 1e2,
    ) -> None:
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = InverseSTFT(n_fft, hop_length, win_length or n_fft, padding)
        self.max_magnitude = float(max_magnitude)

    def spectrum(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, dim) -> real and imaginary parts (B, T, bins)."""
        log_mag, phase = self.out(x).chunk(2, dim=-1)
        magnitude = torch.exp(log_mag).clamp(max=self.max_magnitude)
        return magnitude * torch.cos(phase), magnitude * torch.sin(phase)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.istft(*self.spectrum(x), lengths=lengths)

    def output_length(self, frames: int) -> int:
        return self.istft.output_length(frames)


class STFT(nn.Module):
    """Short-time Fourier transform as a strided conv1d: waveform (B, N) -> real, imag (B, T, bins).

    "center" reflect-pads n_fft // 2 on both sides (torch.stft's default), "same" reflect-pads
    (win_length - hop) // 2 (Vocos' mel features). `power` returns |X|^power instead of (re, im).
    """

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        win_length: int | None = None,
        padding: Padding = "center",
        window: Tensor | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        _check_padding(padding)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.win_length = int(win_length or n_fft)
        self.padding = padding
        self.pad_mode = pad_mode
        base = hann_window(self.win_length) if window is None else window.to(torch.float32)
        self.register_buffer("window", base.clone())
        self.register_buffer("bases", rfft_bases(self.n_fft).to(torch.float32), persistent=False)

    @property
    def pad(self) -> int:
        return self.n_fft // 2 if self.padding == "center" else (self.win_length - self.hop_length) // 2

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        x = audio.unsqueeze(1)
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode=self.pad_mode)
        window = _full_window(self.window, self.win_length, self.n_fft).to(x.dtype)
        kernel = (self.bases.to(x.dtype) * window).unsqueeze(1)
        spec = F.conv1d(x, kernel, stride=self.hop_length).transpose(1, 2)
        real, imag = spec.chunk(2, dim=-1)
        return real, imag

    def magnitude(self, audio: Tensor, power: float = 1.0) -> Tensor:
        """|STFT|^power, (B, T, bins)."""
        real, imag = self(audio)
        energy = real.square() + imag.square()
        return energy.sqrt() if power == 1.0 else energy.pow(power / 2)


__all__ = [
    "PADDINGS",
    "STFT",
    "ISTFTHead",
    "InverseSTFT",
    "hann_window",
    "irfft_bases",
    "overlap_add",
    "rfft_bases",
]

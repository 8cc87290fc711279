"""Reconstruction losses and optional discriminators for `zoo.train`.

Audio codecs learn little from a waveform L1 alone (phase is arbitrary), so the trainer compares
magnitude spectra at several resolutions and log-mel spectra, as EnCodec/Vocos-style codecs do.
The discriminators (a patch GAN for images; multi-period and multi-scale for audio) are optional
and small: on CPU they cost more than they give for short runs, so training configs turn them on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalities.metrics import mel_filterbank
from registry.errors import ConfigError

# (n_fft, hop) pairs at 24 kHz; scaled with the sample rate so the time spans stay the same.
_STFT_RESOLUTIONS_24K: tuple[tuple[int, int], ...] = ((2048, 512), (1024, 256), (512, 128), (256, 64), (128, 32))


def _stft_magnitude(x: Tensor, n_fft: int, hop: int) -> Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, n_fft, window, center=True, return_complex=True)
    return spec.abs().clamp_min(1e-7)


def stft_resolutions(sample_rate: int, count: int = 5) -> list[tuple[int, int]]:
    """The default resolutions for a sample rate, as powers of two no larger than one second."""
    scale = sample_rate / 24000
    out = []
    for n_fft, hop in _STFT_RESOLUTIONS_24K[:count]:
        n = 2 ** max(4, round(torch.log2(torch.tensor(n_fft * scale)).item()))
        out.append((int(n), max(1, int(n // (n_fft // hop)))))
    return out


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence plus log-magnitude L1, averaged over several STFT resolutions."""

    def __init__(self, resolutions: list[tuple[int, int]]) -> None:
        super().__init__()
        if not resolutions:
            raise ConfigError("MultiResolutionSTFTLoss needs at least one (n_fft, hop) resolution")
        self.resolutions = [(int(n), int(h)) for n, h in resolutions]

    def forward(self, estimate: Tensor, reference: Tensor) -> Tensor:
        total = estimate.new_zeros(())
        for n_fft, hop in self.resolutions:
            est, ref = _stft_magnitude(estimate, n_fft, hop), _stft_magnitude(reference, n_fft, hop)
            convergence = torch.linalg.norm(ref - est) / torch.linalg.norm(ref).clamp_min(1e-7)
            total = total + convergence + (est.log() - ref.log()).abs().mean()
        return total / len(self.resolutions)


class MelLoss(nn.Module):
    """L1 between natural-log mel spectrograms (the codecs' 'mel loss'; same mel scale as `mel_distance`)."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("filterbank", mel_filterbank(sample_rate, n_fft, n_mels, 0.0, None).float(), False)

    def forward(self, estimate: Tensor, reference: Tensor) -> Tensor:
        fb = self.filterbank.to(estimate)
        est = torch.einsum("mf,bft->bmt", fb, _stft_magnitude(estimate, self.n_fft, self.hop)).clamp_min(1e-5).log()
        ref = torch.einsum("mf,bft->bmt", fb, _stft_magnitude(reference, self.n_fft, self.hop)).clamp_min(1e-5).log()
        return (est - ref).abs().mean()


# -- discriminators ------------------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / VQGAN style): a real/fake score per overlapping image patch."""

    def __init__(self, channels: int = 3, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(1, layers):
            nxt = width * min(2**i, 8)
            blocks += [nn.Conv2d(c, nxt, 4, 2, 1), nn.GroupNorm(1, nxt), nn.LeakyReLU(0.2)]
            c = nxt
        blocks.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        feats, h = [], x
        for layer in self.net:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(h)
        return [[*feats, h]]


def _features(convs: nn.ModuleList, out: nn.Module, h: Tensor) -> list[Tensor]:
    """Every layer's activation (leaky ReLU 0.1) and the final logits: what feature matching compares."""
    feats = []
    for conv in convs:
        h = F.leaky_relu(conv(h), 0.1)
        feats.append(h)
    feats.append(out(h))
    return feats


class _PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, width: int) -> None:
        super().__init__()
        self.period = period
        chans = [1, width, width * 4, width * 16, width * 16]
        self.convs = nn.ModuleList(
            nn.utils.parametrizations.weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1) if i < 3 else 1, (2, 0)))
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:], strict=True))
        )
        self.out = nn.utils.parametrizations.weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, (1, 0)))

    def forward(self, x: Tensor) -> list[Tensor]:
        pad = (-x.shape[-1]) % self.period
        h = F.pad(x, (0, pad), mode="reflect" if pad < x.shape[-1] else "constant")
        return _features(self.convs, self.out, h.reshape(h.shape[0], 1, -1, self.period))


class _ScaleDiscriminator(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        spec = [(1, width, 15, 1, 1), (width, width * 4, 41, 4, 4), (width * 4, width * 16, 41, 4, 16),
                (width * 16, width * 16, 5, 1, 1)]
        self.convs = nn.ModuleList(
            nn.utils.parametrizations.weight_norm(nn.Conv1d(a, b, k, s, k // 2, groups=g)) for a, b, k, s, g in spec
        )
        self.out = nn.utils.parametrizations.weight_norm(nn.Conv1d(width * 16, 1, 3, 1, 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        return _features(self.convs, self.out, x)


class AudioDiscriminator(nn.Module):
    """HiFi-GAN's multi-period (periods 2, 3, 5, 7, 11) and multi-scale (x1, x2, x4 pooled) discriminators."""

    def __init__(self, width: int = 16, periods: tuple[int, ...] = (2, 3, 5, 7, 11), scales: int = 3) -> None:
        super().__init__()
        if width % 4:
            raise ConfigError(f"audio discriminator width must be a multiple of 4 (grouped convs); got {width}")
        self.periods = nn.ModuleList(_PeriodDiscriminator(p, width) for p in periods)
        self.scales = nn.ModuleList(_ScaleDiscriminator(width) for _ in range(scales))

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        outs = [d(x) for d in self.periods]
        h = x
        for i, d in enumerate(self.scales):
            if i:
                h = F.avg_pool1d(h, 4, 2, padding=2)
            outs.append(d(h))
        return outs


def discriminator_loss(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    """Hinge loss on each sub-discriminator's last output."""
    total = real[0][-1].new_zeros(())
    for r, f in zip(real, fake, strict=True):
        total = total + F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean()
    return total / len(real)


def generator_losses(real: list[list[Tensor]], fake: list[list[Tensor]]) -> tuple[Tensor, Tensor]:
    """(adversarial hinge loss, feature-matching L1) for the generator side."""
    adv = fake[0][-1].new_zeros(())
    fm = fake[0][-1].new_zeros(())
    for r, f in zip(real, fake, strict=True):
        adv = adv + F.relu(1 - f[-1]).mean()
        fm = fm + sum((a.detach() - b).abs().mean() for a, b in zip(r[:-1], f[:-1], strict=True)) / max(1, len(f) - 1)
    return adv / len(fake), fm / len(fake)


def make_discriminator(modality: str, width: int) -> nn.Module:
    if modality == "image":
        return PatchDiscriminator(3, width)
    if modality == "audio":
        return AudioDiscriminator(width)
    raise ConfigError(f"no discriminator for modality {modality!r}; turn `loss.gan.weight` to 0 for it")

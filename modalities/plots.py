"""Pictures a person can check at a glance: originals against reconstructions, spectrograms, code usage.

Figures are built on matplotlib's Agg canvas directly (no pyplot state, no display needed) and
written as PNG; each function returns the path it wrote.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from modalities._common import PathLike, check_finite, describe
from modalities.metrics import CodebookUsage, codebook_usage, log_mel, psnr
from registry.errors import InputError, MediaError


def _to_hwc(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) canonical to (H, W, 3) floats in [0, 1] for imshow."""
    return ((x.detach().cpu().double().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def _as_batch(x: Any, ndim: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().cpu()
    if t.ndim == ndim - 1:
        t = t[None]
    if t.ndim != ndim:
        raise InputError(f"{what}: expected {ndim - 1} or {ndim} axes, got shape {tuple(t.shape)}.")
    check_finite(t, what)
    return t.float()


def _write(fig: Figure, path: PathLike, dpi: int) -> Path:
    out = Path(os.fspath(path))
    if out.suffix.lower() != ".png":
        raise InputError(f"plots are written as PNG; got {describe(path)} (use a .png suffix).")
    if not out.parent.is_dir():
        raise MediaError(f"cannot write plot {describe(path)}: folder {str(out.parent)!r} does not exist.")
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=dpi, format="png")
    return out


def image_grid(
    originals: Any,
    reconstructions: Any,
    path: PathLike,
    *,
    titles: list[str] | None = None,
    max_items: int = 8,
    dpi: int = 100,
) -> Path:
    """Originals (top row) over reconstructions (bottom row), with each pair's PSNR in the title."""
    a = _as_batch(originals, 4, "image_grid originals")[:max_items]
    b = _as_batch(reconstructions, 4, "image_grid reconstructions")[:max_items]
    if a.shape != b.shape:
        raise InputError(
            f"image_grid: originals {tuple(a.shape)} and reconstructions {tuple(b.shape)} differ."
        )
    n = a.shape[0]
    scores = psnr(a, b)
    h, w = a.shape[-2:]
    fig = Figure(figsize=(max(3.0, 2.6 * n * w / max(h, w)), 5.4))
    for i in range(n):
        for row, (src, label) in enumerate(((a, "original"), (b, "reconstruction"))):
            ax = fig.add_subplot(2, n, row * n + i + 1)
            ax.imshow(_to_hwc(src[i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            name = titles[i] if titles and i < len(titles) else f"#{i}"
            ax.set_title(f"{name} {label}" if row == 0 else f"{label} {float(scores[i]):.1f} dB", fontsize=8)
    fig.tight_layout()
    return _write(fig, path, dpi)


def video_strip(
    video: Any, path: PathLike, *, reconstruction: Any | None = None, frames: int = 8, dpi: int = 100
) -> Path:
    """`frames` evenly spaced frames of the first video in a row (reconstruction in a second row)."""
    v = _as_batch(video, 5, "video_strip video")[0]
    rows = [("original", v)]
    if reconstruction is not None:
        r = _as_batch(reconstruction, 5, "video_strip reconstruction")[0]
        if r.shape != v.shape:
            raise InputError(
                f"video_strip: video {tuple(v.shape)} and reconstruction {tuple(r.shape)} differ."
            )
        rows.append(("reconstruction", r))
    t = v.shape[1]
    picks = np.unique(np.linspace(0, t - 1, min(frames, t)).round().astype(int))
    h, w = v.shape[-2:]
    panel = 1.8
    fig = Figure(figsize=(max(3.0, panel * len(picks)), len(rows) * (panel * h / w + 0.35) + 0.2))
    for r_i, (label, clip) in enumerate(rows):
        for c_i, k in enumerate(picks):
            ax = fig.add_subplot(len(rows), len(picks), r_i * len(picks) + c_i + 1)
            ax.imshow(_to_hwc(clip[:, k]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label} t={k}", fontsize=7)
    fig.tight_layout()
    return _write(fig, path, dpi)


def spectrogram_comparison(
    reference: Any,
    estimate: Any,
    sample_rate: int,
    path: PathLike,
    *,
    n_fft: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
    dpi: int = 100,
) -> Path:
    """Log-mel spectrograms of reference, estimate and their difference (first item, channels averaged)."""
    ref = _as_batch(reference, 3, "spectrogram reference")[:1].mean(dim=1, keepdim=True)
    est = _as_batch(estimate, 3, "spectrogram estimate")[:1].mean(dim=1, keepdim=True)
    n = min(ref.shape[-1], est.shape[-1])
    ref, est = ref[..., :n].double(), est[..., :n].double()
    m_ref = log_mel(ref, sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels)[0, 0].numpy()
    m_est = log_mel(est, sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels)[0, 0].numpy()
    seconds = n / sample_rate
    fig = Figure(figsize=(9.0, 7.0))
    axes = []
    lo, hi = float(m_ref.min()), float(m_ref.max())
    panels = (
        ("reference", m_ref, "magma", (lo, hi)),
        ("estimate", m_est, "magma", (lo, hi)),
        ("estimate - reference", m_est - m_ref, "coolwarm", None),
    )
    for i, (title, data, cmap, limits) in enumerate(panels):
        ax = fig.add_subplot(3, 1, i + 1)
        axes.append(ax)
        if limits is None:
            span = float(np.abs(data).max()) or 1.0
            limits = (-span, span)
        im = ax.imshow(
            data,
            origin="lower",
            aspect="auto",
            cmap=cmap,
            vmin=limits[0],
            vmax=limits[1],
            extent=(0.0, seconds, 0, n_mels),
        )
        ax.set_title(f"{title} (log-mel, {sample_rate} Hz)", fontsize=9)
        ax.set_ylabel("mel bin")
        fig.colorbar(im, ax=ax)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    return _write(fig, path, dpi)


def codebook_histogram(ids: Any, codebook_size: int, path: PathLike, *, dpi: int = 100) -> Path:
    """Per-code counts and the rank-ordered usage curve, titled with usage and perplexity."""
    usage: CodebookUsage = codebook_usage(ids, codebook_size)
    counts = usage.counts.numpy()
    fig = Figure(figsize=(9.0, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    # one filled step artist instead of one bar per code: codebooks have up to 2**18 entries
    ax.stairs(counts, np.arange(codebook_size + 1), fill=True, color="tab:blue")
    ax.set_xlim(0, codebook_size)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("code index")
    ax.set_ylabel("count (symlog)")
    ax.set_title(f"{usage.used}/{codebook_size} codes used ({usage.usage:.1%})", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    ranked = np.sort(counts)[::-1]
    ranked = ranked[ranked > 0]
    ax2.plot(np.arange(1, len(ranked) + 1), ranked / ranked.sum(), color="tab:orange")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("rank")
    ax2.set_ylabel("frequency")
    ax2.set_title(f"perplexity {usage.perplexity:.1f} ({usage.entropy_bits:.2f} bits)", fontsize=9)
    fig.tight_layout()
    return _write(fig, path, dpi)

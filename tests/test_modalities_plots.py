"""Every plot renders a PNG that opens, has a sensible size and shows real content (not a blank canvas)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modalities import audio, image, plots, samples, video
from registry.errors import InputError


def _check_png(path, min_w: int, min_h: int) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w >= min_w and h >= min_h, (w, h)
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert rgb.std() > 10.0, "plot looks blank"
    colours = np.unique(rgb.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 100, f"only {len(colours)} colours: the content did not render"


def test_image_grid(tmp_path):
    x = torch.cat([image.prepare(samples.path(n), size=128).pixels for n in ("chelsea.png", "coffee.jpg")])
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)
    out = plots.image_grid(x, noisy, tmp_path / "grid.png", titles=["cat", "coffee"])
    _check_png(out, 300, 400)


def test_video_strip(tmp_path):
    clip = video.load(samples.path("bbb_clip.mp4"), fps=5)
    out = plots.video_strip(clip, tmp_path / "strip.png", reconstruction=clip.flip(-1), frames=6)
    _check_png(out, 600, 200)


def test_spectrogram_comparison(tmp_path):
    speech = audio.load(samples.path("arctic_a0009.wav"))
    degraded = speech + 0.01 * torch.randn_like(speech)
    out = plots.spectrogram_comparison(speech, degraded, 16000, tmp_path / "spec.png")
    _check_png(out, 600, 500)


def test_codebook_histogram(tmp_path):
    ids = torch.from_numpy(np.random.default_rng(0).zipf(1.3, size=5000) % 1024)
    out = plots.codebook_histogram(ids, 1024, tmp_path / "codes.png")
    with Image.open(out) as im:
        assert im.size[0] >= 600 and im.size[1] >= 250
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert rgb.std() > 10.0
    blue = (rgb[..., 2] > 150) & (rgb[..., 0] < 80)
    assert blue.sum() > 200, "the histogram bars did not render"


def test_plot_errors(tmp_path):
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(InputError, match="PNG"):
        plots.image_grid(x, x, tmp_path / "grid.jpg")
    with pytest.raises(InputError, match="differ"):
        plots.image_grid(x, torch.zeros(1, 3, 16, 8), tmp_path / "grid.png")

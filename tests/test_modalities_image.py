"""Images: decoding every supported format, canonical layout, lossless round trips, fitting policies."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from modalities import geometry, image, samples
from registry.errors import InputError

CHELSEA = samples.path("chelsea.png")


def _pil_rgb(path) -> np.ndarray:
    """The independent reference: Pillow's own decoding of a file as RGB uint8."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def test_canonical_layout_and_range():
    x = image.load(CHELSEA)
    assert x.shape == (1, 3, 300, 451) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) < -0.9 and 0.5 < float(x.max()) <= 1.0
    assert np.array_equal(image.to_uint(x), _pil_rgb(CHELSEA))


@pytest.mark.parametrize("name", ["coffee.jpg", "astronaut.webp"])
def test_lossy_samples_match_pillow(name):
    path = samples.path(name)
    assert np.array_equal(image.to_uint(image.load(path)), _pil_rgb(path))


@pytest.mark.parametrize(
    "suffix,kwargs", [(".png", {}), (".bmp", {}), (".tif", {}), (".tiff", {}), (".webp", {"lossless": True})]
)
def test_lossless_round_trip(tmp_path, suffix, kwargs):
    x = image.load(CHELSEA)
    out = image.save(x, tmp_path / f"cat{suffix}", **kwargs)
    y = image.load(out)
    assert torch.equal(x, y)
    assert np.array_equal(_pil_rgb(out), _pil_rgb(CHELSEA))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_colour_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(40, 56, 3), dtype=np.uint16)
    x = image.load(pixels)
    assert x.shape == (1, 3, 40, 56)
    out = image.save(x, tmp_path / f"deep{suffix}", bit_depth=16)
    assert image.info(out).bit_depth == 16
    back = image.load(out)
    assert np.array_equal(image.to_uint(back, 16), pixels)


def test_16bit_colour_file_written_elsewhere(tmp_path):
    """A 16-bit RGB TIFF written by tifffile (not by us) keeps all 16 bits (Pillow alone would give 8)."""
    tifffile = pytest.importorskip(
        "tifffile", reason="tifffile (a scikit-image dependency) writes the reference"
    )
    pixels = np.random.default_rng(1).integers(0, 65536, size=(24, 32, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ref.tif", pixels)
    assert np.array_equal(image.to_uint(image.load(tmp_path / "ref.tif"), 16), pixels)


def test_16bit_grey(tmp_path):
    grey = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 41).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    x = image.load(tmp_path / "g16.png")
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert np.array_equal(image.to_uint(x, 16)[..., 0], grey)
    out = image.save(x[:, :1], tmp_path / "g16_out.png", bit_depth=16)
    assert np.array_equal(np.asarray(Image.open(out)).astype(np.uint16), grey)


def test_grey_and_palette_become_rgb(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, size=(20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgb = image.to_uint(image.load(tmp_path / "g.png"))
    assert np.array_equal(rgb, np.repeat(grey[..., None], 3, axis=-1))
    Image.open(CHELSEA).convert("P").save(tmp_path / "p.png")
    assert np.array_equal(image.to_uint(image.load(tmp_path / "p.png")), _pil_rgb(tmp_path / "p.png"))


def test_rgba_composited_over_background(tmp_path):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.linspace(0, 255, 16, dtype=np.uint8)[None, :]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = image.load(tmp_path / "a.png").double()
    a = rgba[..., 3] / 255.0
    for channel, value in enumerate((200 / 255.0, 0.0, 0.0)):
        expected = value * a + 1.0 * (1 - a)
        assert torch.allclose(got[0, channel], torch.from_numpy(expected * 2 - 1), atol=1e-6)
    black = image.load(tmp_path / "a.png", background=0.0)
    assert float(black[0, 1].max()) == -1.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    base = np.asarray(Image.open(CHELSEA).convert("RGB"))[:40, :64]
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(base).save(path, exif=exif)
    got = image.to_uint(image.load(path))
    assert np.array_equal(got, _pil_rgb(path))
    assert got.shape[:2] == ((64, 40) if orientation >= 5 else (40, 64))


def test_array_pil_and_torch_inputs_agree():
    ref = image.load(CHELSEA)
    hwc = np.array(Image.open(CHELSEA).convert("RGB"))
    assert torch.equal(image.load(hwc), ref)
    assert torch.equal(image.load(Image.open(CHELSEA)), ref)
    chw_unit = torch.from_numpy(hwc).permute(2, 0, 1).double() / 255.0
    assert torch.allclose(image.load(chw_unit), ref, atol=1e-6)
    assert torch.allclose(image.load(ref, value_range=(-1, 1)), ref, atol=1e-6)
    assert torch.equal(image.load(io.BytesIO(CHELSEA.read_bytes())), ref)
    assert torch.equal(image.load(CHELSEA.read_bytes()), ref)
    assert torch.equal(image.load(str(CHELSEA)), ref)


def test_batched_arrays():
    batch = np.random.default_rng(3).integers(0, 256, size=(4, 12, 10, 3), dtype=np.uint8)
    x = image.to_canonical(batch)
    assert x.shape == (4, 3, 12, 10)
    assert np.array_equal(image.to_uint(x[2:3]), batch[2])


def test_out_of_range_float_rejected():
    with pytest.raises(InputError, match="value_range"):
        image.load(np.full((16, 16, 3), 255.0))


def test_resize_crop_policy():
    prepared = image.prepare(CHELSEA, size=256, policy="resize_crop")
    assert prepared.pixels.shape == (1, 3, 256, 256)
    assert prepared.padding.is_zero and prepared.original_size == (300, 451)
    rect = image.prepare(CHELSEA, size=(128, 256), policy="resize_crop")
    assert rect.pixels.shape == (1, 3, 128, 256)
    exact = image.prepare(CHELSEA, size=(64, 96), policy="resize")
    assert exact.pixels.shape == (1, 3, 64, 96)
    assert float(exact.pixels.min()) >= -1.0 and float(exact.pixels.max()) <= 1.0


def test_resize_short_side_and_center_crop():
    x = image.load(CHELSEA)
    short = geometry.resize_short_side(x, 150)
    assert short.shape[-2:] == (150, 226)
    crop = geometry.center_crop(x, 100)
    assert torch.equal(crop, x[..., 100:200, 175:275])
    with pytest.raises(InputError, match="resize first"):
        geometry.center_crop(x, 400)


@pytest.mark.parametrize("mode", ["replicate", "reflect", "constant"])
def test_pad_to_multiple_and_restore(tmp_path, mode):
    x = image.load(CHELSEA)
    prepared = geometry.fit(x, policy="pad", multiple=16, pad_mode=mode)
    assert prepared.pixels.shape == (1, 3, 304, 464)
    assert prepared.padding == geometry.Padding(bottom=4, right=13)
    assert torch.equal(prepared.pixels[..., :300, :451], x)
    if mode == "replicate":
        assert torch.equal(prepared.pixels[..., 300:, :451], x[..., 299:300, :].expand(-1, -1, 4, -1))
    assert torch.equal(prepared.restore(prepared.pixels), x)
    out = image.save(prepared.pixels, tmp_path / "restored.png", padding=prepared.padding)
    assert torch.equal(image.load(out), x)
    upscaled = torch.nn.functional.interpolate(prepared.pixels, scale_factor=2)
    assert prepared.restore(upscaled, scale=2).shape[-2:] == (600, 902)


def test_pad_policy_downscales_long_side_first():
    prepared = image.prepare(CHELSEA, size=200, policy="pad", multiple=8)
    assert max(prepared.pixels.shape[-2:]) == 200
    assert prepared.pixels.shape[-2] % 8 == 0 and prepared.pixels.shape[-1] % 8 == 0


def test_policy_none_requires_multiple():
    with pytest.raises(InputError, match="multiples of 16x16"):
        geometry.fit(image.load(CHELSEA), policy="none", multiple=16)
    ok = geometry.fit(image.load(CHELSEA)[..., :288, :448], policy="none", multiple=16)
    assert ok.padding.is_zero


def test_info_reads_header():
    meta = image.info(CHELSEA)
    assert (meta.width, meta.height, meta.format, meta.bit_depth, meta.frames) == (451, 300, "PNG", 8, 1)


def test_jpeg_save_quality(tmp_path):
    x = image.load(CHELSEA)
    hi = image.load(image.save(x, tmp_path / "hi.jpg", quality=95))
    lo = image.load(image.save(x, tmp_path / "lo.jpg", quality=20))
    err_hi, err_lo = (hi - x).abs().mean(), (lo - x).abs().mean()
    assert err_hi < err_lo and float(err_hi) < 0.02

"""The bundled sample media: present, small, documented in NOTICE.md, and of the kind their names promise."""

from __future__ import annotations

import pytest

import modalities
from modalities import samples
from registry.errors import InputError

EXPECTED = {
    "chelsea.png": "image",
    "coffee.jpg": "image",
    "astronaut.webp": "image",
    "arctic_a0009.wav": "audio",
    "guitar_em9.flac": "audio",
    "bbb_clip.mp4": "video",
    "chelsea_pan.gif": "video",
}


def test_list_and_kinds():
    assert samples.list() == sorted(EXPECTED)
    for name, kind in EXPECTED.items():
        assert modalities.detect(samples.path(name)) == kind, name


def test_total_size_is_small():
    total = sum(samples.path(name).stat().st_size for name in samples.list())
    assert total < 2 * 1024 * 1024, f"samples take {total} bytes; keep them well under 3 MB"


def test_every_sample_has_a_source_and_licence():
    notice = (samples.path("chelsea.png").parent / "NOTICE.md").read_text()
    for name in samples.list():
        rows = [line for line in notice.splitlines() if line.startswith(f"| `{name}`")]
        assert len(rows) == 1, f"{name} needs exactly one row in NOTICE.md"
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        assert len(cells) == 5 and all(cells), (
            f"{name}: every column (source, licence, changes) must be filled"
        )
        assert any(word in cells[3] for word in ("CC0", "public domain", "CC BY", "CMU ARCTIC")), cells[3]


def test_unknown_sample_name():
    with pytest.raises(InputError, match="available"):
        samples.path("lena.png")
    with pytest.raises(InputError):
        samples.path("../image.py")
    with pytest.raises(InputError):
        samples.path("NOTICE.md")


def test_lazy_submodules():
    assert modalities.image.load is not None and modalities.audio.load is not None
    assert modalities.video.save is not None and modalities.metrics.psnr is not None
    with pytest.raises(AttributeError):
        modalities.nonexistent  # noqa: B018

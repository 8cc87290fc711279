"""Small, freely licensed sample media shipped with the package (sources and licences in NOTICE.md).

Used by the tests, the demos and anyone who wants to try a tokenizer without hunting for files.
"""

from __future__ import annotations

from pathlib import Path

from registry.errors import InputError

_HERE = Path(__file__).resolve().parent
_SUFFIXES = {".png", ".jpg", ".webp", ".gif", ".wav", ".flac", ".mp4"}


def list() -> list[str]:  # noqa: A001 - the public name the package promises
    """Names of the bundled sample files, sorted."""
    return sorted(p.name for p in _HERE.iterdir() if p.suffix.lower() in _SUFFIXES)


def path(name: str) -> Path:
    """Absolute path of a bundled sample, e.g. ``path("chelsea.png")``."""
    candidate = _HERE / name
    if candidate.name != name or not candidate.is_file() or candidate.suffix.lower() not in _SUFFIXES:
        raise InputError(f"no bundled sample named {name!r}; available: {', '.join(list())}.")
    return candidate

"""One dataset item from path to shard row: list the inputs, read media in a worker, encode on the model's side.

The reading half (`load_item`) imports no model and raises nothing for a bad file, so it runs in
worker processes (local engine) or Ray tasks alike; the encoding half (`encode_items`) batches only
items of identical shape, so no padding is ever added and each row equals `tok.encode` of its item alone.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import InputError, MediaError, ZooError

LIST_SUFFIXES = (".txt", ".lst", ".list")
"""A file INPUT with one of these suffixes is a list of paths (one a line), anything else one media file."""

LAYOUTS = ("ids", "sequence")
"""`ids`: the family's natural id layout, flattened row-major; `sequence`: `Tokens.to_sequence` (LM ids)."""


@dataclass(frozen=True)
class Item:
    """A dataset item: its position in the input list, where to read it, and what the row calls it."""

    index: int
    path: str
    source: str


@dataclass(frozen=True)
class LoadSpec:
    """What a reader needs to know of the model (picklable; no weights)."""

    modality: str
    sample_rate: int | None
    channels: int
    image_size: int | None = None


@dataclass
class Loaded:
    """A read item: the canonical array without batch axis, or the reason it could not be read."""

    index: int
    array: np.ndarray | None = None
    original_size: tuple[int, ...] = ()
    error: str = ""


@dataclass
class Failure:
    index: int
    source: str
    stage: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "source": self.source, "stage": self.stage, "reason": self.reason}


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _excluded(path: Path, exclude: Path | None) -> bool:
    return exclude is not None and (path == exclude or exclude in path.parents)


def list_inputs(
    spec: str | os.PathLike | Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None
) -> list[Item]:
    """Items of a folder (recursive, sorted, hidden files skipped), a file list, a glob, or a list of paths.

    Paths in a file list are relative to the list's folder and keep the list's order; blank lines and
    lines starting with '#' are skipped. Anything under `exclude` (the output folder) is left out.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    if isinstance(spec, (list, tuple)):
        return [Item(i, str(p), str(p)) for i, p in enumerate(spec)]
    text = os.fspath(spec)  # type: ignore[arg-type]
    root = Path(text).expanduser()
    if root.is_dir():
        found = []
        for path in root.rglob("*"):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                continue
            if not _excluded(path.resolve(), skip):
                found.append(rel.as_posix())
        found.sort()
        return [Item(i, str(root / rel), rel) for i, rel in enumerate(found)]
    if root.is_file():
        if root.suffix.lower() not in LIST_SUFFIXES:
            return [Item(0, str(root), root.name)]
        lines = [ln.strip() for ln in root.read_text(encoding="utf-8").splitlines()]
        entries = [ln for ln in lines if ln and not ln.startswith("#")]
        return [Item(i, str(root.parent / Path(e).expanduser()), e) for i, e in enumerate(entries)]
    if _has_magic(text):
        matches = sorted(m for m in glob.glob(os.path.expanduser(text), recursive=True) if Path(m).is_file())
        matches = [m for m in matches if not _excluded(Path(m).resolve(), skip)]
        if matches:
            return [Item(i, m, m) for i, m in enumerate(matches)]
        raise InputError(f"the glob {text!r} matches no files; check the pattern (quote it so the shell keeps it)")
    raise InputError(
        f"{text}: no such folder or file. INPUT is a folder (read recursively), a file list "
        f"({', '.join(LIST_SUFFIXES)}, one path a line) or a quoted glob such as 'data/**/*.wav'"
    )


def _read(path: str, spec: LoadSpec) -> tuple[np.ndarray, tuple[int, ...]]:
    import modalities

    kind = modalities.detect(path)
    if kind != spec.modality:
        raise MediaError(f"{path} holds {kind}; this tokenizer takes {spec.modality}")
    if kind == "audio":
        channels = {1: "mono", 2: "stereo"}.get(spec.channels)
        x = modalities.audio.load(path, sample_rate=spec.sample_rate, channels=channels)
        return x[0].numpy(), (int(x.shape[-1]),)
    if kind == "image":
        x = modalities.image.load(path)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if spec.image_size is not None:
            x = modalities.geometry.fit(x, size=spec.image_size, policy="resize_crop").pixels
        return x[0].numpy(), size
    x = modalities.video.load(path)
    return x[0].numpy(), tuple(int(s) for s in x.shape[-3:])


def describe_error(exc: BaseException) -> str:
    """One line for the failures file: our own messages as they are, anything else with its type."""
    text = " ".join(str(exc).split()) or "(no message)"
    return text if isinstance(exc, ZooError) else f"{type(exc).__name__}: {text}"


def load_item(item: Item, spec: LoadSpec) -> Loaded:
    """Read one item; a file that cannot be read comes back with its reason instead of raising."""
    if not os.path.exists(item.path):
        return Loaded(item.index, error=f"{item.path}: no such file")
    try:
        array, size = _read(item.path, spec)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; a bad file must never stop a run
        return Loaded(item.index, error=describe_error(exc))
    return Loaded(item.index, np.ascontiguousarray(array, dtype=np.float32), size)


def row_from_tokens(tokens: Any, item: Item, original_size: tuple[int, ...], layout: str) -> dict[str, Any]:
    """A shard row from the Tokens of one item (batch size 1, already trimmed to its length)."""
    ids = tokens.to_sequence()[0] if layout == "sequence" else tokens.ids[0]
    flat = ids.reshape(-1).cpu().numpy().astype(np.int32)
    return {
        "index": item.index,
        "source": item.source,
        "modality": tokens.modality,
        "ids": flat,
        "ids_shape": [int(s) for s in ids.shape],
        "grid": [int(g) for g in tokens.grid],
        "original_size": [int(s) for s in original_size],
    }


def _batches(loaded: list[Loaded], batch_size: int) -> list[list[Loaded]]:
    """Same-shape batches, in order of each shape's first item, so padding never enters the model."""
    groups: dict[tuple[int, ...], list[Loaded]] = {}
    for entry in loaded:
        groups.setdefault(tuple(entry.array.shape), []).append(entry)  # type: ignore[union-attr]
    out = []
    for members in groups.values():
        out.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    return out


_ENCODE_ERRORS = (ZooError, RuntimeError, ValueError)
"""What a bad item can make a model raise (too small, too long, out of memory); bugs elsewhere still raise."""


def encode_items(
    tok: Any,
    items: dict[int, Item],
    loaded: list[Loaded],
    batch_size: int,
    layout: str,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Rows and failures for read items; a batch that fails is retried item by item to find the bad one."""
    import torch

    rows: list[dict[str, Any]] = []
    failures = [Failure(e.index, items[e.index].source, "read", e.error) for e in loaded if e.array is None]
    if on_batch is not None and failures:
        on_batch(len(failures))
    for batch in _batches([e for e in loaded if e.array is not None], batch_size):
        x = torch.from_numpy(np.stack([e.array for e in batch]))  # type: ignore[misc]
        try:
            tokens = tok.encode(x)
            encoded = [tokens.item(i) for i in range(len(batch))]
        except _ENCODE_ERRORS:
            encoded = []
            for e in batch:
                try:
                    encoded.append(tok.encode(torch.from_numpy(e.array[None])))  # type: ignore[index]
                except _ENCODE_ERRORS as exc:
                    encoded.append(exc)
        for e, result in zip(batch, encoded, strict=True):
            if isinstance(result, BaseException):
                failures.append(Failure(e.index, items[e.index].source, "encode", describe_error(result)))
            else:
                rows.append(row_from_tokens(result, items[e.index], e.original_size, layout))
        if on_batch is not None:
            on_batch(len(batch))
    rows.sort(key=lambda r: r["index"])
    failures.sort(key=lambda f: f.index)
    return rows, failures

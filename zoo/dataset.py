"""`tokenize_dataset` (the `zoo tokenize` command): a whole folder of media into resumable Parquet shards.

The input list is fixed first (sorted), and shard k always covers items [k * shard_size, (k + 1) *
shard_size) of it, so which rows a shard holds never depends on timing, engine or crash history. A
run skips the shards already on disk and writes the others; since each shard is renamed into place
only when complete, a run killed at any moment and started again ends with the same files as one
that was never interrupted. See `zoo.engines.shards` for the format.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from registry.errors import ConfigError, InputError, UnsupportedError
from zoo.engines.items import LAYOUTS, Failure, Item, LoadSpec, list_inputs
from zoo.engines.shards import (
    FAILURES_NAME,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SHARD_FORMAT,
    read_shard_meta,
    remove_partial_files,
    shard_name,
    write_shard,
    write_text_atomic,
)

ENGINES = ("local", "ray")
DEFAULT_SHARD_SIZE = 1024


def state_sha256(tok: Any) -> str:
    """A hash of the weights themselves (names, dtypes, shapes, bytes), whatever folder or Hub they came from."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(tok.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
            t = t.view(torch.uint8) if t.element_size() == 1 else t.view(torch.int16)
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _revision(tok: Any) -> str | None:
    source = getattr(tok, "source", {}) or {}
    value = source.get("revision") or source.get("hub_revision")
    return str(value) if value else None


def _check_options(engine: str, batch_size: int, workers: int, shard_size: int, layout: str) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0), ("shard_size", shard_size, 1)):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _identity(tok: Any, items: list[Item], layout: str, shard_size: int, image_size: int | None) -> dict[str, Any]:
    """What decides the shards' bytes; a resumed run must match it exactly."""
    listing = hashlib.sha256("\n".join(item.source for item in items).encode()).hexdigest()
    spec = tok.spec
    from zoo.tokenizer import __version__

    return {
        "tokenizer": tok.name,
        "family": tok.family,
        "revision": _revision(tok),
        "checkpoint_sha256": state_sha256(tok),
        "zoo_version": __version__,
        "modality": spec.modality,
        "codebook_sizes": [int(s) for s in spec.codebook_sizes],
        "layout": layout,
        "shard_size": shard_size,
        "image_size": image_size,
        "inputs": len(items),
        "inputs_sha256": listing,
    }


def _run_id(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class _Dataset:
    """The output folder: what is done, what is left, and the files that describe it."""

    def __init__(self, out: Path, identity: dict[str, Any], config: dict[str, Any], items: list[Item]) -> None:
        self.out = out
        self.identity = identity
        self.run = _run_id(identity)
        self.config = config
        size = identity["shard_size"]
        self.plan = [(k, items[start : start + size]) for k, start in enumerate(range(0, len(items), size))]
        self.done: dict[int, dict[str, Any]] = {}
        self.started = time.time()

    def _mismatch(self, previous: dict[str, Any]) -> str:
        keys = sorted(k for k in self.identity if previous.get(k) != self.identity.get(k))
        return ", ".join(f"{k}: {previous.get(k)!r} then, {self.identity.get(k)!r} now" for k in keys)

    def open(self) -> None:
        """Check a folder left by an earlier run is the same job, and take over its finished shards."""
        self.out.mkdir(parents=True, exist_ok=True)
        remove_partial_files(self.out)
        manifest_path = self.out / MANIFEST_NAME
        existing = sorted(self.out.glob("shard-*.parquet"))
        if manifest_path.is_file():
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
            if previous.get("run") != self.run:
                changed = self._mismatch(previous.get("identity", {}))
                raise ConfigError(
                    f"{self.out} holds a dataset from a different job ({changed}); "
                    "resume only with the same model, inputs and settings, or pick a new --out"
                )
        elif existing:
            raise ConfigError(f"{self.out} has shards but no {MANIFEST_NAME}; it was not written by `zoo tokenize`")
        for path in existing:
            meta = read_shard_meta(path)
            if meta.get("run") != self.run:
                raise ConfigError(f"{path} was written by a different job (run {meta.get('run')}, this is {self.run})")
            self.done[int(meta["shard"])] = meta
        self._write_index(complete=False)

    def pending(self) -> list[tuple[int, list[Item]]]:
        return [(k, items) for k, items in self.plan if k not in self.done]

    def done_items(self) -> int:
        return sum(m["stop"] - m["start"] for m in self.done.values())

    def commit(self, shard: int, rows: list[dict[str, Any]], failures: list[Failure]) -> None:
        items = self.plan[shard][1]
        meta = {
            "format": SHARD_FORMAT,
            "run": self.run,
            **self.identity,
            "shard": shard,
            "start": items[0].index,
            "stop": items[-1].index + 1,
            "rows": len(rows),
            "failures": [f.as_dict() for f in failures],
        }
        write_shard(self.out / shard_name(shard), rows, meta)
        self.done[shard] = meta
        self._write_index(complete=False)

    def _write_index(self, complete: bool) -> dict[str, Any]:
        failures = [f for k in sorted(self.done) for f in self.done[k]["failures"]]
        write_text_atomic(self.out / FAILURES_NAME, "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures))
        shards = [
            {
                "file": shard_name(k),
                "shard": k,
                "items": [self.done[k]["start"], self.done[k]["stop"]],
                "rows": self.done[k]["rows"],
                "failures": len(self.done[k]["failures"]),
            }
            for k in sorted(self.done)
        ]
        manifest = {
            "format": MANIFEST_FORMAT,
            "complete": complete,
            "run": self.run,
            "identity": self.identity,
            "config": self.config,
            "inputs": self.identity["inputs"],
            "items": sum(s["rows"] for s in shards),
            "failures": len(failures),
            "shards": len(shards),
            "shards_planned": len(self.plan),
            "shard_files": shards,
            "failures_file": FAILURES_NAME,
            "seconds_this_run": round(time.time() - self.started, 3),
        }
        write_text_atomic(self.out / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest

    def finish(self) -> dict[str, Any]:
        return self._write_index(complete=len(self.done) == len(self.plan))


def tokenize_dataset(
    input: str | os.PathLike | Sequence[str | os.PathLike],  # noqa: A002 - the CLI's name for it
    model: str | os.PathLike,
    out: str | os.PathLike,
    engine: str = "local",
    batch_size: int = 8,
    workers: int = 2,
    device: str | None = None,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    layout: str = "ids",
    image_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize every item of `input` with `model` into Parquet shards under `out`; returns the manifest.

    `input`: a folder (recursive), a file list (.txt), a glob or a list of paths; each item's media
    kind is read from its content. `model`: a registered name with weights, a checkpoint folder or
    `hf-hub:org/repo`. `layout`: "ids" (natural layout, flattened) or "sequence" (LM ids with codebook
    offsets). `image_size`: resize the short side and centre-crop images to this size first.
    Re-running the same call continues an interrupted run; bad files go to `failures.jsonl`.
    """
    from zoo import from_pretrained

    _check_options(engine, batch_size, workers, shard_size, layout)
    out_dir = Path(out).expanduser()
    items = list_inputs(input, exclude=out_dir)
    if not items:
        raise InputError(f"{input}: found no files to tokenize")
    tok = from_pretrained(model, device=device).eval()
    spec = tok.spec
    if spec.kind == "continuous":
        raise UnsupportedError(
            f"{tok.name} gives continuous tokens (a latent), and the shards store integer ids; "
            "pick a discrete or binary tokenizer (zoo list)"
        )
    if spec.modality == "video" and image_size is not None:
        raise ConfigError("image_size applies to image tokenizers only; this one takes video")
    identity = _identity(tok, items, layout, shard_size, image_size)
    config = {
        "input": [os.fspath(p) for p in input] if isinstance(input, (list, tuple)) else os.fspath(input),
        "model": os.fspath(model),
        "engine": engine,
        "batch_size": batch_size,
        "workers": workers,
        "device": device,
        "shard_size": shard_size,
        "layout": layout,
        "image_size": image_size,
    }
    dataset = _Dataset(out_dir, identity, config, items)
    dataset.open()
    pending = dataset.pending()
    load_spec = LoadSpec(spec.modality, spec.sample_rate, spec.channels, image_size)
    from tqdm import tqdm

    bar = tqdm(total=len(items), initial=dataset.done_items(), unit="item", desc="tokenize", disable=not progress)
    try:
        if engine == "local":
            from zoo.engines.local import run_local

            run_local(
                tok, load_spec, pending, dataset.commit,
                batch_size=batch_size, workers=workers, layout=layout, on_progress=bar.update,
            )
        else:
            from zoo.engines.ray_engine import run_ray

            del tok  # each actor loads its own copy
            run_ray(
                os.fspath(model), device, load_spec, pending, dataset.commit,
                batch_size=batch_size, workers=workers, layout=layout, on_progress=bar.update,
            )
    finally:
        bar.close()
    return dataset.finish()

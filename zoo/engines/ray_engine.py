"""The Ray engine: Ray Data reads media in tasks and tokenizes in an actor pool, one model per actor.

Rows travel as plain columns (array bytes plus a JSON shape) so ragged images and clips need no
tensor extension types. The driver gathers each shard's rows as they arrive and commits a shard once
all of its items are back, through the same writer as the local engine, so both engines write the
same bytes and a Ray run resumes a local one (and the other way round). Needs `ray[data]`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from registry.errors import BackendError, ZooError
from zoo.engines.items import Failure, Item, Loaded, LoadSpec, encode_items, load_item

Sink = Callable[[int, list[dict[str, Any]], list[Failure]], None]


def _read_row(row: dict[str, Any], spec: LoadSpec) -> dict[str, Any]:
    """A Ray task: one item read to canonical float32 bytes, or its reason."""
    loaded = load_item(Item(int(row["index"]), str(row["path"]), str(row["source"])), spec)
    array = loaded.array
    return {
        "index": loaded.index,
        "path": row["path"],
        "source": row["source"],
        "data": b"" if array is None else array.tobytes(),
        "shape": json.dumps([] if array is None else list(array.shape)),
        "original_size": json.dumps(list(loaded.original_size)),
        "error": loaded.error,
    }


class TokenizeActor:
    """One tokenizer per actor, loaded once; each call encodes a batch grouped by shape."""

    def __init__(self, model: str, device: str | None, layout: str, batch_size: int, threads: int) -> None:
        import torch

        from zoo import from_pretrained

        torch.set_num_threads(max(1, threads))
        self.tok = from_pretrained(model, device=device).eval()
        self.layout = layout
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items: dict[int, Item] = {}
        loaded: list[Loaded] = []
        for i in range(len(batch["index"])):
            index = int(batch["index"][i])
            items[index] = Item(index, str(batch["path"][i]), str(batch["source"][i]))
            error = str(batch["error"][i])
            size = tuple(json.loads(str(batch["original_size"][i])))
            if error:
                loaded.append(Loaded(index, error=error))
                continue
            shape = json.loads(str(batch["shape"][i]))
            array = np.frombuffer(batch["data"][i], dtype=np.float32).reshape(shape)
            loaded.append(Loaded(index, array, size))
        rows, failures = encode_items(self.tok, items, loaded, self.batch_size, self.layout)
        return _columns(rows, failures)


def _columns(rows: list[dict[str, Any]], failures: list[Failure]) -> dict[str, np.ndarray]:
    """Rows and failures as one output row per input item (failures carry stage and reason)."""
    out: dict[str, list[Any]] = {
        k: [] for k in ("index", "source", "modality", "ids", "ids_shape", "grid", "original_size", "stage", "reason")
    }
    for row in rows:
        for key in ("index", "source", "modality"):
            out[key].append(row[key])
        out["ids"].append(row["ids"].astype(np.int32).tobytes())
        for key in ("ids_shape", "grid", "original_size"):
            out[key].append(json.dumps(row[key]))
        out["stage"].append("")
        out["reason"].append("")
    for f in failures:
        out["index"].append(f.index)
        out["source"].append(f.source)
        out["stage"].append(f.stage)
        out["reason"].append(f.reason)
        for key in ("modality", "ids_shape", "grid", "original_size"):
            out[key].append("")
        out["ids"].append(b"")
    columns = {k: np.array(v, dtype=object) for k, v in out.items()}
    columns["index"] = np.array(out["index"], dtype=np.int64)
    return columns


def _record(batch: dict[str, np.ndarray], i: int) -> tuple[int, dict[str, Any] | None, Failure | None]:
    index = int(batch["index"][i])
    if batch["stage"][i]:
        return index, None, Failure(index, str(batch["source"][i]), str(batch["stage"][i]), str(batch["reason"][i]))
    row = {
        "index": index,
        "source": str(batch["source"][i]),
        "modality": str(batch["modality"][i]),
        "ids": np.frombuffer(batch["ids"][i], dtype=np.int32),
        "ids_shape": json.loads(batch["ids_shape"][i]),
        "grid": json.loads(batch["grid"][i]),
        "original_size": json.loads(batch["original_size"][i]),
    }
    return index, row, None


def _wants_gpu(device: str | None) -> bool:
    import torch

    if device is not None:
        return str(device).startswith("cuda")
    return torch.cuda.is_available()


def run_ray(
    model: str,
    device: str | None,
    spec: LoadSpec,
    shards: list[tuple[int, list[Item]]],
    sink: Sink,
    *,
    batch_size: int,
    workers: int,
    layout: str,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Tokenize the items of `shards` on the running Ray cluster (a local one is started when none is)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise BackendError(
            "engine='ray' needs Ray Data: pip install 'tokenzoo[ray]' (or 'ray[data]'), or use engine='local'"
        ) from None
    items = [item for _, members in shards for item in members]
    if not items:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        gpu = _wants_gpu(device)
        actor_device = device if device is not None else ("cuda" if gpu else "cpu")
        shard_of = {item.index: shard for shard, members in shards for item in members}
        waiting = {shard: len(members) for shard, members in shards}
        got: dict[int, tuple[list[dict[str, Any]], list[Failure]]] = {shard: ([], []) for shard, _ in shards}
        # Small read blocks (<= 64 items) so reading spreads over tasks; CPU actors leave a core to the readers,
        # or a pool holding every CPU would wait forever for input that no task can be scheduled to read.
        blocks = max(1, min(len(items), max(4 * max(1, workers), len(items) // 64)))
        resources = ray.cluster_resources()
        room = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 1)) - 1
        actors = max(1, min(workers, room))
        ds = ray.data.from_items(
            [{"index": i.index, "path": i.path, "source": i.source} for i in items], override_num_blocks=blocks
        )
        # Readers ask for less CPU than actors so Ray keeps them apart: decoding scales in tasks, not in the actors.
        ds = ds.map(_read_row, fn_kwargs={"spec": spec}, num_cpus=0.5)
        ds = ds.map_batches(
            TokenizeActor,
            fn_constructor_kwargs={
                "model": model, "device": actor_device, "layout": layout, "batch_size": batch_size, "threads": 1,
            },
            batch_size=batch_size * 4,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=0 if gpu else 1,
            num_gpus=1 if gpu else 0,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["index"])):
                index, row, failure = _record(batch, i)
                shard = shard_of[index]
                (got[shard][0].append(row) if row is not None else got[shard][1].append(failure))
                waiting[shard] -= 1
                if waiting[shard] == 0:
                    rows, failures = got.pop(shard)
                    rows.sort(key=lambda r: r["index"])
                    failures.sort(key=lambda f: f.index)
                    sink(shard, rows, failures)
            if on_progress is not None:
                on_progress(len(batch["index"]))
        if got:
            raise ZooError(f"the Ray run returned without items of shards {sorted(got)}; rerun to finish them")
    finally:
        if started:
            ray.shutdown()

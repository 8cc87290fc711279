"""The embedded engine: reader processes decode media a window ahead while this process runs the model.

Readers are forked where the platform can (as torch's DataLoader does: they start at once, without
importing torch and every family again; they never touch CUDA), spawned elsewhere, one torch thread each.
A reader that crashes inside a native decoder costs only its own item: the pool is restarted and the
items it held are read again one at a time, and an item that kills a reader twice is a failure.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from zoo.engines.items import Failure, Item, Loaded, LoadSpec, describe_error, encode_items, load_item

Sink = Callable[[int, list[dict[str, Any]], list[Failure]], None]
Shards = list[tuple[int, list[Item]]]

_CRASHED = "the reader process died while decoding this file (a crash inside a media decoder)"


def _init_reader() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


class _Readers:
    """`submit` items now, `gather` them later in order; `workers=0` reads in this process."""

    def __init__(self, workers: int, spec: LoadSpec) -> None:
        self.workers = workers
        self.spec = spec
        self.pool: ProcessPoolExecutor | None = None
        if workers > 0:
            self._start()

    def _start(self) -> None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_reader)

    def _restart(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self._start()

    def submit(self, items: list[Item]) -> list[Any]:
        if self.pool is None:
            return [load_item(item, self.spec) for item in items]
        return [(self.pool, self.pool.submit(load_item, item, self.spec)) for item in items]

    def _alone(self, item: Item) -> Loaded:
        assert self.pool is not None
        try:
            return self.pool.submit(load_item, item, self.spec).result()
        except BrokenProcessPool:
            self._restart()
            return Loaded(item.index, error=_CRASHED)

    def gather(self, items: list[Item], handles: list[Any]) -> list[Loaded]:
        out: list[Loaded] = []
        for item, handle in zip(items, handles, strict=True):
            if isinstance(handle, Loaded):
                out.append(handle)
                continue
            pool, future = handle
            try:
                out.append(future.result())
            except BrokenProcessPool:
                if pool is self.pool:
                    self._restart()
                out.append(self._alone(item))
            except Exception as exc:  # noqa: BLE001 - e.g. an array that cannot be sent back; the run goes on
                out.append(Loaded(item.index, error=describe_error(exc)))
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _windows(shards: Shards, size: int) -> list[tuple[int, list[Item], bool]]:
    """Shards cut into windows of at most `size` items: (shard, items, last window of its shard)."""
    out = []
    for shard, items in shards:
        starts = range(0, len(items), size)
        out.extend((shard, items[i : i + size], i == starts[-1]) for i in starts)
    return out


def run_local(
    tok: Any,
    spec: LoadSpec,
    shards: Shards,
    sink: Sink,
    *,
    batch_size: int,
    workers: int,
    layout: str,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Read, encode and hand each shard's rows and failures to `sink`, in shard order.

    Media are read one window ahead of the model (a few batches, not a whole shard), so memory holds
    two windows of decoded items whatever the shard size; only the small rows wait for their shard.
    """
    windows = _windows(shards, max(4 * batch_size, 4 * workers, 16))
    readers = _Readers(workers, spec)
    rows: list[dict[str, Any]] = []
    failures: list[Failure] = []
    try:
        ahead = readers.submit(windows[0][1]) if windows else []
        for pos, (shard, items, last) in enumerate(windows):
            handles = ahead
            ahead = readers.submit(windows[pos + 1][1]) if pos + 1 < len(windows) else []
            loaded = readers.gather(items, handles)
            by_index = {item.index: item for item in items}
            new_rows, new_failures = encode_items(tok, by_index, loaded, batch_size, layout, on_progress)
            rows.extend(new_rows)
            failures.extend(new_failures)
            if last:
                sink(shard, rows, failures)
                rows, failures = [], []
    finally:
        readers.close()

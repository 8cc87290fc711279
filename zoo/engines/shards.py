"""The on-disk format of a tokenized dataset: Parquet shards, a failures file and a manifest.

A shard is the unit of commit: it covers a fixed range of the input list, is written to a temporary
file and renamed into place, and carries its own failures and identity in its Parquet metadata. So a
shard on disk is complete by construction, and the failures file and manifest can always be rebuilt
from the shards alone (which is what a resumed run does).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from registry.errors import ConfigError

SHARD_FORMAT = "tokenzoo.shard/1"
MANIFEST_FORMAT = "tokenzoo.dataset/1"
MANIFEST_NAME = "manifest.json"
FAILURES_NAME = "failures.jsonl"
META_KEY = b"tokenzoo"

SCHEMA = pa.schema(
    [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("ids", pa.list_(pa.int32()), nullable=False),
        pa.field("ids_shape", pa.list_(pa.int32()), nullable=False),
        pa.field("grid", pa.list_(pa.int32()), nullable=False),
        pa.field("original_size", pa.list_(pa.int64()), nullable=False),
    ]
)


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def _file_mode() -> int:
    """What a plain `open` would give under this process's umask (mkstemp makes 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: Path, write: Any) -> None:
    """`write(tmp_path)`, flush to disk, then rename over `path`: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def remove_partial_files(out: Path) -> int:
    """Temporary files a killed run left behind (never complete, so never read)."""
    count = 0
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


def write_shard(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Rows in input order plus `meta` (identity, item range, failures) in the file's key-value metadata."""
    columns = {name: [row[name] for row in rows] for name in SCHEMA.names}
    columns["ids"] = [row["ids"].tolist() for row in rows]
    schema = SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    table = pa.Table.from_pydict(columns, schema=schema)
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def read_shard_meta(path: Path) -> dict[str, Any]:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"{path}: not a readable Parquet shard ({exc}); delete it and rerun to rewrite it") from None
    if META_KEY not in metadata:
        raise ConfigError(f"{path}: a Parquet file without tokenzoo metadata; was it written by `zoo tokenize`?")
    meta = json.loads(metadata[META_KEY])
    if meta.get("format") != SHARD_FORMAT:
        raise ConfigError(f"{path}: shard format {meta.get('format')!r}, expected {SHARD_FORMAT!r}")
    return meta


def read_rows(out: str | os.PathLike) -> pa.Table:
    """All rows of a finished dataset folder as one table (for checks and small datasets)."""
    files = sorted(Path(out).glob("shard-*.parquet"))
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f).replace_schema_metadata(None) for f in files])

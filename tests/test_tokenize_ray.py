"""The Ray engine on a local Ray instance started here: same shard bytes as the local engine, and it resumes.

Ray is an optional extra; the test skips, saying so, when it is not installed.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import modalities
import zoo
from tests.test_tokenize import IMAGES, check_rows_match_encode, models, run, write_bad_files, write_clips, write_images

__all__ = ["models"]  # the module fixture, shared with test_tokenize.py

LIMIT_S = 600


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="the Ray engine needs the optional extra ray[data]")
    pytest.importorskip("ray.data", reason="the Ray engine needs Ray Data (pip install 'ray[data]')")
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway local instance needs no token on disk
    patch.setenv("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=96 * 1024**2, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        patch.undo()


@pytest.fixture
def time_limit() -> Iterator[None]:
    """Fail instead of hanging when a Ray run stalls."""

    def stop(*_: object) -> None:
        raise TimeoutError(f"the Ray test ran past {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.heavy
def test_ray_resumes_a_local_run_with_identical_shards(
    tmp_path: Path, models: dict[str, Path], ray_instance: object, time_limit: None
) -> None:
    folder = tmp_path / "data"
    write_images(folder, IMAGES)
    write_bad_files(folder)
    write_clips(folder / "audio")
    model = models["uniwetok-tiny"]
    local = tmp_path / "local"
    whole = run(folder, model, local, batch_size=3, workers=0, shard_size=4)
    assert whole["shards"] >= 3 and whole["failures"] >= 4

    resumed = tmp_path / "resumed"
    shutil.copytree(local, resumed)
    dropped = sorted(resumed.glob("shard-*.parquet"))[1:]
    for path in dropped:  # as if the local run had been killed after its first shard
        path.unlink()
    manifest = run(folder, model, resumed, engine="ray", batch_size=3, workers=1, shard_size=4)

    assert manifest["complete"] and manifest["config"]["engine"] == "ray"
    assert (manifest["items"], manifest["failures"], manifest["shards"]) == (
        whole["items"], whole["failures"], whole["shards"]
    )
    for path in sorted(local.glob("shard-*.parquet")):
        assert (resumed / path.name).read_bytes() == path.read_bytes(), path.name
    assert (resumed / "failures.jsonl").read_text() == (local / "failures.jsonl").read_text()
    failures = [json.loads(line) for line in (resumed / "failures.jsonl").read_text().splitlines()]
    assert {f["source"] for f in failures} >= {"empty.png", "notes.txt", "truncated.png", "garbage.jpg"}
    tok = zoo.from_pretrained(model).eval()
    assert check_rows_match_encode(tok, folder, resumed, modalities.image.load) == whole["items"]

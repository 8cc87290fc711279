"""`zoo tokenize` / `tokenize_dataset` with the local engine, on real images and audio clips of mixed sizes.

Models are small registered variants saved to a folder once (a tokenizer with weights is what the
command loads); media are skimage's data images and the bundled samples, cropped and cut to mixed sizes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from PIL import Image

import modalities
import zoo
from registry.errors import ConfigError, InputError
from zoo.dataset import tokenize_dataset
from zoo.engines.items import list_inputs
from zoo.engines.shards import read_rows, read_shard_meta

REPO = Path(__file__).resolve().parent.parent

# (skimage file, (height, width)): repeated sizes so batches hold several items, others so they cannot.
IMAGES = [
    ("astronaut.png", (48, 64)),
    ("chelsea.png", (64, 48)),
    ("coffee.png", (48, 64)),
    ("rocket.jpg", (64, 64)),
    ("camera.png", (40, 56)),
    ("hubble_deep_field.jpg", (64, 64)),
    ("motorcycle_left.png", (48, 64)),
]
# (bundled sample, seconds at its own rate, suffix)
CLIPS = [
    ("arctic_a0009.wav", 0.25, ".wav"),
    ("guitar_em9.flac", 0.4, ".flac"),
    ("arctic_a0009.wav", 0.4, ".flac"),
    ("guitar_em9.flac", 0.25, ".wav"),
    ("arctic_a0009.wav", 0.33, ".wav"),
]


def skimage_path(name: str) -> Path:
    skimage = pytest.importorskip("skimage", reason="skimage's data images are the test's real photos")
    path = Path(skimage.__file__).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"skimage data image {name} is not installed with this skimage")
    return path


def write_images(folder: Path, sizes: list[tuple[str, tuple[int, int]]] = IMAGES, scale: int = 1) -> list[Path]:
    """Real photos, resized to cover and centre-cropped to each size, saved as PNG or JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, (h, w)) in enumerate(sizes):
        h, w = h * scale, w * scale
        im = Image.open(skimage_path(name)).convert("RGB")
        ratio = max(h / im.height, w / im.width)
        im = im.resize((max(w, round(im.width * ratio)), max(h, round(im.height * ratio))), Image.BICUBIC)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        im = im.crop((left, top, left + w, top + h))
        path = folder / f"img{i:02d}{'.jpg' if i % 3 == 2 else '.png'}"
        im.save(path, quality=90) if path.suffix == ".jpg" else im.save(path)
        paths.append(path)
    return paths


def write_clips(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, seconds, suffix) in enumerate(CLIPS):
        data, rate = sf.read(modalities.samples.path(name), dtype="float32", always_2d=True)
        start = int(0.1 * rate) * (i + 1)
        path = folder / f"clip{i:02d}{suffix}"
        sf.write(path, data[start : start + int(seconds * rate)], rate)
        paths.append(path)
    return paths


def write_bad_files(folder: Path) -> dict[str, str]:
    """Bad files and a word their failure reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    good = (folder / "img00.png").read_bytes() if (folder / "img00.png").exists() else b""
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not media at all\n")
    (folder / "truncated.png").write_bytes(good[: len(good) // 3] if good else b"\x89PNG\r\n\x1a\n\x00\x00")
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    return {"empty.png": "empty", "notes.txt": "not a media file", "truncated.png": "", "garbage.jpg": ""}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny tokenizers with fixed random weights, saved as checkpoint folders."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name in ("uniwetok-tiny", "wavtokenizer-tiny", "mosstokenizer-tiny"):
        torch.manual_seed(0)
        out[name] = Path(zoo.create_tokenizer(name).save_pretrained(root / name))
    return out


def run(input_: object, model: Path, out: Path, **kwargs: object) -> dict:
    kwargs.setdefault("progress", False)
    return tokenize_dataset(input_, model, out, **kwargs)  # type: ignore[arg-type]


def rows_by_source(out: Path) -> dict[str, dict]:
    rows = read_rows(out).to_pylist()
    sources = [r["source"] for r in rows]
    assert len(sources) == len(set(sources)), "duplicate rows"
    return {r["source"]: r for r in rows}


def check_rows_match_encode(tok: zoo.Tokenizer, folder: Path, out: Path, load: object, layout: str = "ids") -> int:
    """Every row equals `tok.encode` of its file read alone; returns how many rows were checked."""
    rows = rows_by_source(out)
    for source, row in rows.items():
        x = load(folder / source)  # type: ignore[operator]
        tokens = tok.encode(x)
        ids = tokens.to_sequence()[0] if layout == "sequence" else tokens.ids[0]
        assert row["ids_shape"] == list(ids.shape), source
        np.testing.assert_array_equal(np.asarray(row["ids"], dtype=np.int64), ids.reshape(-1).numpy(), err_msg=source)
        assert row["grid"] == list(tokens.grid), source
    return len(rows)


def test_image_rows_equal_encode_alone(tmp_path: Path, models: dict[str, Path]) -> None:
    folder = tmp_path / "images"
    paths = write_images(folder)
    out = tmp_path / "out"
    manifest = run(folder, models["uniwetok-tiny"], out, batch_size=3, workers=1, shard_size=4)
    assert manifest["complete"] and manifest["items"] == len(paths) and manifest["failures"] == 0
    assert manifest["shards"] == 2
    tok = zoo.from_pretrained(models["uniwetok-tiny"]).eval()
    assert check_rows_match_encode(tok, folder, out, modalities.image.load) == len(paths)
    rows = rows_by_source(out)
    for i, (_, size) in enumerate(IMAGES):
        source = paths[i].name
        assert rows[source]["original_size"] == list(size)
        assert rows[source]["modality"] == "image" and rows[source]["index"] == i
    meta = read_shard_meta(out / "shard-00000.parquet")
    assert meta["tokenizer"] == "uniwetok-tiny" and meta["start"] == 0 and meta["stop"] == 4
    assert meta["checkpoint_sha256"] == manifest["identity"]["checkpoint_sha256"]
    assert len(meta["checkpoint_sha256"]) == 64 and meta["codebook_sizes"] == [256, 256]


def test_audio_rows_equal_encode_alone(tmp_path: Path, models: dict[str, Path]) -> None:
    folder = tmp_path / "clips"
    paths = write_clips(folder)
    out = tmp_path / "out"
    manifest = run(folder, models["wavtokenizer-tiny"], out, batch_size=4, workers=0, shard_size=3)
    assert manifest["items"] == len(paths) and manifest["failures"] == 0
    tok = zoo.from_pretrained(models["wavtokenizer-tiny"]).eval()

    def load(path: Path) -> torch.Tensor:
        return modalities.audio.load(path, sample_rate=24000, channels="mono")

    assert check_rows_match_encode(tok, folder, out, load) == len(paths)
    for source, row in rows_by_source(out).items():
        assert row["original_size"] == [load(folder / source).shape[-1]]


def test_sequence_layout_multi_codebook(tmp_path: Path, models: dict[str, Path]) -> None:
    folder = tmp_path / "clips"
    write_clips(folder)
    out = tmp_path / "out"
    run(folder, models["mosstokenizer-tiny"], out, batch_size=2, workers=0, layout="sequence")
    tok = zoo.from_pretrained(models["mosstokenizer-tiny"]).eval()

    def load(path: Path) -> torch.Tensor:
        return modalities.audio.load(path, sample_rate=24000, channels="mono")

    assert check_rows_match_encode(tok, folder, out, load, layout="sequence") == len(CLIPS)
    ids = np.concatenate([np.asarray(r["ids"]) for r in rows_by_source(out).values()])
    assert ids.max() >= 64, "codebooks after the first are shifted by their offsets"


def test_bad_files_are_listed_and_never_stop_the_run(tmp_path: Path, models: dict[str, Path]) -> None:
    folder = tmp_path / "mixed"
    good = write_images(folder, IMAGES[:4])
    expected = write_bad_files(folder)
    write_clips(folder / "audio")  # real media of the wrong kind for an image tokenizer
    listing = tmp_path / "list.txt"
    names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    listing.write_text("# one path a line\n" + "\n".join(f"mixed/{n}" for n in [*names, "missing.png"]) + "\n")
    out = tmp_path / "out"
    manifest = run(listing, models["uniwetok-tiny"], out, batch_size=4, workers=1, shard_size=5)
    rows = rows_by_source(out)
    assert sorted(rows) == sorted(f"mixed/{p.name}" for p in good)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    reasons = {f["source"]: f["reason"] for f in failures}
    assert set(reasons) == {f"mixed/{n}" for n in names if not n.startswith("img")} | {"mixed/missing.png"}
    for name, word in expected.items():
        assert word in reasons[f"mixed/{name}"] and reasons[f"mixed/{name}"], name
    assert "no such file" in reasons["mixed/missing.png"]
    assert all("takes image" in r for s, r in reasons.items() if s.startswith("mixed/audio/"))
    assert manifest["failures"] == len(failures) and manifest["items"] == len(good)
    assert manifest["inputs"] == len(good) + len(failures) and manifest["complete"]


def load_or_die(item: object, spec: object) -> object:
    """A reader that dies the way a segfaulting decoder does, on one file only."""
    from zoo.engines.items import load_item

    if str(item.source).startswith("crash"):  # type: ignore[attr-defined]
        os._exit(11)
    return load_item(item, spec)  # type: ignore[arg-type]


def test_a_reader_that_dies_costs_only_its_item(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the crashing reader is patched in through fork; this platform spawns readers")
    folder = tmp_path / "images"
    good = write_images(folder, IMAGES[:5])
    (folder / "crash.png").write_bytes(good[0].read_bytes())
    monkeypatch.setattr("zoo.engines.local.load_item", load_or_die)
    manifest = run(folder, models["uniwetok-tiny"], tmp_path / "out", batch_size=2, workers=2, shard_size=3)
    assert sorted(rows_by_source(tmp_path / "out")) == sorted(p.name for p in good)
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert [(f["source"], "process died" in f["reason"]) for f in failures] == [("crash.png", True)]
    assert manifest["complete"] and manifest["items"] == len(good)


def test_folder_glob_and_list_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "b").mkdir(parents=True)
    for rel in ("b/2.wav", "a.png", "c.flac", ".hidden.png", "out/shard.png"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x")
    items = list_inputs(folder, exclude=folder / "out")
    assert [i.source for i in items] == ["a.png", "b/2.wav", "c.flac"]
    assert [i.index for i in items] == [0, 1, 2]
    globbed = list_inputs(str(folder / "**" / "*.wav"))
    assert [Path(i.path).name for i in globbed] == ["2.wav"]
    with pytest.raises(InputError, match="matches no files"):
        list_inputs(str(folder / "*.mp3"))
    with pytest.raises(InputError, match="no such folder"):
        list_inputs(tmp_path / "nothing")


def test_rerun_of_finished_job_rewrites_nothing_and_other_job_is_refused(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    folder = tmp_path / "images"
    write_images(folder, IMAGES[:3])
    out = tmp_path / "out"
    first = run(folder, models["uniwetok-tiny"], out, workers=0, shard_size=2)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    again = run(folder, models["uniwetok-tiny"], out, workers=0, shard_size=2)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")} == stamps
    assert (again["items"], again["shards"], again["run"]) == (first["items"], first["shards"], first["run"])
    with pytest.raises(ConfigError, match="layout"):
        run(folder, models["uniwetok-tiny"], out, workers=0, shard_size=2, layout="sequence")
    with pytest.raises(ConfigError, match="batch_size"):
        run(folder, models["uniwetok-tiny"], tmp_path / "o2", batch_size=0)


def _cli(input_: Path, model: Path, out: Path) -> list[str]:
    code = "import sys; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "tokenize", str(input_), "--model", str(model), "--out", str(out),
            "--workers", "0", "--batch-size", "1", "--shard-size", "2"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.heavy
def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path: Path, models: dict[str, Path]) -> None:
    """Killed with SIGKILL after its first shard, rerun: the same shard bytes as a run left alone."""
    folder = tmp_path / "images"
    write_images(folder, IMAGES * 3, scale=2)  # 21 items of 80..128 px: a few seconds of work per run
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    model = models["uniwetok-tiny"]
    whole = tmp_path / "whole"
    done = subprocess.run(_cli(folder, model, whole), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(folder, model, killed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not list(killed.glob("shard-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    planned = len(list(whole.glob("shard-*.parquet")))
    survivors = {p.name: p.stat().st_mtime_ns for p in killed.glob("shard-*.parquet")}
    assert 1 <= len(survivors) < planned, f"the kill should land mid-run ({len(survivors)} of {planned} shards)"

    resumed = subprocess.run(_cli(folder, model, killed), env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name, stamp in survivors.items():
        assert (killed / name).stat().st_mtime_ns == stamp, f"{name} was rewritten instead of kept"
    whole_files = sorted(p.name for p in whole.glob("shard-*.parquet"))
    assert sorted(p.name for p in killed.glob("shard-*.parquet")) == whole_files
    for name in whole_files:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    assert (killed / "failures.jsonl").read_text() == (whole / "failures.jsonl").read_text()
    assert not list(killed.glob(".*.tmp"))
    table = pq.read_table(killed / whole_files[0])
    assert table.num_rows >= 1
    indices = read_rows(killed).column("index").to_pylist()
    assert len(indices) == len(set(indices)) == 21
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["complete"] and manifest["items"] == 21 and manifest["failures"] == 1


def test_cli_reports_and_refuses_bad_input(tmp_path: Path, models: dict[str, Path]) -> None:
    missing = subprocess.run(_cli(tmp_path / "nothing", models["uniwetok-tiny"], tmp_path / "out"),
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no such folder" in missing.stderr

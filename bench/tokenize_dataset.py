"""`zoo tokenize` throughput: items/s of the local engine and the Ray engine against a plain Python loop.

One run, one machine, one dataset: real photos (skimage's data images, randomly cropped to varied
sizes and saved as JPEG/PNG) tokenized at a fixed input size by a tiny image tokenizer with fixed random
weights, so reading and resizing the files is a real share of the work, as it is for a real dataset.

- loop: `modalities.image.load` + `geometry.fit` + `tok.encode`, one file at a time, in this process;
- local: `tokenize_dataset(engine="local")`, reader processes plus shape-grouped batches, shards written;
- ray: `tokenize_dataset(engine="ray")` on a local Ray instance started here (start-up not timed).

Times include each engine's own start-up (spawning readers, Ray actors), which is what a user waits
for; with few items that start-up dominates. The last line is one JSON object.

    python bench/tokenize_dataset.py [--items 96] [--model uniwetok-tiny] [--image-size 64] [--workers 2]
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's `tokenize`, which numpy and torch import: run as a
# script, its own folder must leave sys.path before anything else is imported.
_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _BENCH]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import modalities  # noqa: E402
import zoo  # noqa: E402
from zoo.dataset import tokenize_dataset  # noqa: E402

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg")


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    rng = np.random.default_rng(seed)
    photos = [Image.open(data / name).convert("RGB") for name in PHOTOS]
    paths = []
    for i in range(count):
        im = photos[i % len(photos)]
        w, h = int(rng.integers(im.width // 2, im.width + 1)), int(rng.integers(im.height // 2, im.height + 1))
        x, y = int(rng.integers(0, im.width - w + 1)), int(rng.integers(0, im.height - h + 1))
        path = folder / f"photo{i:05d}{'.jpg' if i % 2 else '.png'}"
        crop = im.crop((x, y, x + w, y + h))
        crop.save(path, quality=92) if path.suffix == ".jpg" else crop.save(path)
        paths.append(path)
    return paths


def plain_loop(tok: zoo.Tokenizer, paths: list[Path], size: int) -> float:
    start = time.perf_counter()
    for path in paths:
        x = modalities.geometry.fit(modalities.image.load(path), size=size, policy="resize_crop").pixels
        tok.encode(x)
    return time.perf_counter() - start


def engine_run(folder: Path, model: Path, out: Path, engine: str, args: argparse.Namespace) -> tuple[float, dict]:
    start = time.perf_counter()
    manifest = tokenize_dataset(
        folder, model, out, engine=engine, batch_size=args.batch_size, workers=args.workers,
        shard_size=args.shard_size, image_size=args.image_size, progress=False,
    )
    return time.perf_counter() - start, manifest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=96)
    p.add_argument("--model", default="uniwetok-tiny")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the encoding process")
    p.add_argument("--no-ray", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        model = Path(zoo.create_tokenizer(args.model).save_pretrained(root / "model"))
        folder = root / "photos"
        folder.mkdir()
        paths = make_photos(folder, args.items)
        tok = zoo.from_pretrained(model).eval()
        plain_loop(tok, paths[:2], args.image_size)  # warm-up
        results = {"loop": plain_loop(tok, paths, args.image_size)}
        results["local"], manifest = engine_run(folder, model, root / "local", "local", args)
        identical = None
        ray_start = None
        if not args.no_ray:
            import ray

            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            t0 = time.perf_counter()
            ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024**2)
            ray_start = time.perf_counter() - t0
            try:
                results["ray"], _ = engine_run(folder, model, root / "ray", "ray", args)
            finally:
                ray.shutdown()
            shards = sorted((root / "local").glob("shard-*.parquet"))
            identical = all(s.read_bytes() == (root / "ray" / s.name).read_bytes() for s in shards)

    n = args.items
    rate = {k: n / v for k, v in results.items()}
    print(f"{n} photos -> {args.model} at {args.image_size}px, workers={args.workers}, batch={args.batch_size}, "
          f"{os.cpu_count()} CPUs, torch threads {args.threads}")
    print(f"{'run':<8} {'seconds':>9} {'items/s':>9} {'vs loop':>8}")
    for key, seconds in results.items():
        print(f"{key:<8} {seconds:>9.2f} {rate[key]:>9.2f} {results['loop'] / seconds:>7.2f}x")
    if ray_start is not None:
        print(f"ray.init (not timed above): {ray_start:.1f} s; Ray shards identical to local: {identical}")
    print(f"rows {manifest['items']}, failures {manifest['failures']}, shards {manifest['shards']}")
    figures = {
        "items": n,
        "loop_items_per_s": round(rate["loop"], 3),
        "local_items_per_s": round(rate["local"], 3),
        "local_speedup_vs_loop": round(results["loop"] / results["local"], 3),
    }
    if "ray" in results:
        figures["ray_items_per_s"] = round(rate["ray"], 3)
        figures["ray_speedup_vs_loop"] = round(results["loop"] / results["ray"], 3)
        figures["ray_shards_identical_to_local"] = identical
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

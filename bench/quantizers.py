"""Quantizer speed and peak memory against vector-quantize-pytorch, same inputs, same run, CPU.

Each (case, implementation) runs in its own subprocess so that its peak memory is its own: a sampler
thread reads the process RSS every millisecond during the timed call, and the peak above the RSS just
before the call is reported. Times are the best of `--repeats` eval-mode forward passes (ids and
quantized vectors) after one warm-up (the multi-second cases run once, without warm-up). Both sides
get identical inputs and codebooks, and the bench reports how many ids agree.

    python bench/quantizers.py                 # all cases but nn_bound_64k, 1 thread
    python bench/quantizers.py --cases vq_16k --threads 2
    python bench/quantizers.py --quick         # smaller inputs for a smoke run

The last line printed is one JSON object of figures (ratios: vqpt time / ours, vqpt peak / ours).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# name -> (description, vectors, vectors with --quick)
CASES: dict[str, tuple[str, int, int]] = {
    "vq_16k": ("VQ 16,384 x 256 codes", 32768, 4096),
    "rvq_8x1024": ("RVQ 8 x 1,024 x 512", 32768, 4096),
    "fsq": ("FSQ [8,8,8,5,5,5]", 1 << 20, 1 << 16),
    "lfq_2p18": ("LFQ 2^18", 1 << 18, 1 << 15),
    "nn_bound_4k": ("nearest_code 262,144 x 8 codes", 4096, 1024),
    "nn_bound_16k": ("nearest_code 262,144 x 8 codes", 16384, 2048),
    "nn_bound_64k": ("nearest_code 262,144 x 8 codes", 65536, 4096),
}
# The 65,536-vector search takes minutes on one thread; its peak memory matches the smaller ones.
DEFAULT_CASES = [name for name in CASES if name != "nn_bound_64k"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measure(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(best seconds, peak extra MiB over all calls, last result); one warm-up call when repeating."""
    import gc

    result = fn() if repeats > 1 else None
    best = float("inf")
    peak_extra = 0
    for _ in range(repeats):
        del result
        gc.collect()
        base = _rss_bytes()
        peak = [base]
        done = threading.Event()

        def sample(peak: list[int] = peak, done: threading.Event = done) -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_bytes())
                time.sleep(0.001)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        done.set()
        sampler.join()
        peak_extra = max(peak_extra, peak[0] - base)
    return best, peak_extra / 2**20, result


def build(case: str, impl: str, vectors: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """(call, ids-of-result) for one case and implementation ("ours" or "vqpt")."""
    import torch

    torch.manual_seed(0)
    sys.path.insert(0, str(ROOT))
    from zoo.layers.quantize import FSQ, LFQ, ResidualVQ, VectorQuantizer, nearest_code

    if case == "vq_16k":
        z = torch.randn(1, vectors, 256)
        codebook = torch.randn(16384, 256)
        if impl == "ours":
            q = VectorQuantizer(16384, 256).eval()
            q.codebook.data.copy_(codebook)
            return (lambda: q(z)), (lambda out: out.ids)
        from vector_quantize_pytorch import VectorQuantize

        v = VectorQuantize(dim=256, codebook_size=16384).eval()
        v._codebook.embed.data.copy_(codebook.unsqueeze(0))
        return (lambda: v(z)), (lambda out: out[1])
    if case == "rvq_8x1024":
        z = torch.randn(1, vectors, 512)
        books = torch.randn(8, 1024, 512) / 8
        if impl == "ours":
            q = ResidualVQ(8, 1024, 512).eval()
            for layer, book in zip(q.layers, books, strict=True):
                layer.codebook.data.copy_(book)
            return (lambda: q(z)), (lambda out: out.ids)
        from vector_quantize_pytorch import ResidualVQ as VqptResidualVQ

        v = VqptResidualVQ(dim=512, num_quantizers=8, codebook_size=1024).eval()
        for layer, book in zip(v.layers, books, strict=True):
            layer._codebook.embed.data.copy_(book.unsqueeze(0))
        return (lambda: v(z)), (lambda out: out[1])
    if case == "fsq":
        z = torch.randn(1, vectors, 6) * 2
        if impl == "ours":
            q = FSQ([8, 8, 8, 5, 5, 5], bound="atanh").eval()
            return (lambda: q(z)), (lambda out: out.ids)
        from vector_quantize_pytorch import FSQ as VqptFSQ

        v = VqptFSQ(levels=[8, 8, 8, 5, 5, 5]).eval()
        return (lambda: v(z)), (lambda out: out[1])
    if case == "lfq_2p18":
        z = torch.randn(1, vectors, 18)
        if impl == "ours":
            q = LFQ(18, bit_order="msb_first").eval()
            return (lambda: q(z)), (lambda out: out.ids)
        from vector_quantize_pytorch import LFQ as VqptLFQ

        v = VqptLFQ(dim=18, codebook_size=2**18).eval()
        return (lambda: v(z)), (lambda out: out[1])
    if case.startswith("nn_bound"):
        z = torch.randn(vectors, 8)
        codebook = torch.randn(262144, 8)
        if impl == "ours":
            return (lambda: nearest_code(z, codebook)), (lambda out: out)
        raise SystemExit("skip")
    raise SystemExit(f"unknown case {case}")


def worker(case: str, impl: str, vectors: int, repeats: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    call, ids_of = build(case, impl, vectors)
    with torch.no_grad():
        seconds, peak_mib, result = measure(call, repeats)
    ids = ids_of(result).reshape(-1).long()
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib, "ids": ids[:4096].tolist()}))


def run_worker(case: str, impl: str, vectors: int, repeats: int, threads: int) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--worker", case, impl, "--vectors", str(vectors)]
    cmd += ["--repeats", str(repeats), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        if "skip" in proc.stderr or "skip" in proc.stdout:
            return None
        raise RuntimeError(f"{case}/{impl} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--cases", nargs="*", default=DEFAULT_CASES, choices=list(CASES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.vectors, args.repeats, args.threads)
        return

    figures: dict[str, float | int | str] = {"threads": args.threads, "quick": int(args.quick)}
    header = f"{'case':<34}{'vectors':>9}{'ours s':>10}{'vqpt s':>10}{'speedup':>9}"
    header += f"{'ours MiB':>10}{'vqpt MiB':>10}{'ids agree':>11}"
    print(header)
    print("-" * len(header))
    for case in args.cases:
        title, vectors, quick_vectors = CASES[case]
        n = quick_vectors if args.quick else vectors
        repeats = 1 if (case == "vq_16k" or case.startswith("nn_bound")) and not args.quick else args.repeats
        ours = run_worker(case, "ours", n, repeats, args.threads)
        base = run_worker(case, "vqpt", n, repeats, args.threads)
        assert ours is not None
        row = f"{title:<34}{n:>9}{ours['seconds']:>10.3f}"
        figures[f"{case}_ours_s"] = round(ours["seconds"], 4)
        figures[f"{case}_ours_peak_mib"] = round(ours["peak_mib"], 1)
        if base is None:
            row += f"{'-':>10}{'-':>9}{ours['peak_mib']:>10.1f}{'-':>10}{'-':>11}"
            dense = n * 262144 * 4 / 2**20
            row += f"   (dense distances would need {dense:,.0f} MiB)"
            figures[f"{case}_dense_matrix_mib"] = round(dense, 1)
        else:
            speedup = base["seconds"] / ours["seconds"]
            agree = sum(a == b for a, b in zip(ours["ids"], base["ids"], strict=True)) / len(ours["ids"])
            row += f"{base['seconds']:>10.3f}{speedup:>8.2f}x"
            row += f"{ours['peak_mib']:>10.1f}{base['peak_mib']:>10.1f}{agree:>10.1%}"
            figures[f"{case}_vqpt_s"] = round(base["seconds"], 4)
            figures[f"{case}_vqpt_peak_mib"] = round(base["peak_mib"], 1)
            figures[f"{case}_speedup_vs_vqpt"] = round(speedup, 3)
            figures[f"{case}_memory_ratio_vs_vqpt"] = round(base["peak_mib"] / max(ours["peak_mib"], 1e-3), 3)
            figures[f"{case}_ids_agree"] = round(agree, 4)
        print(row)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

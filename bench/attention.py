"""Time and peak memory of the SDPA backend against the math reference, causal and windowed, on CPU.

    python bench/attention.py            # L = 1024, 4096, 16384; B=1, H=8, D=64; one thread
    python bench/attention.py --quick    # L = 512, 1024, 2048 (a smoke run)

Each measurement runs in a fresh subprocess, so its peak resident memory (VmHWM minus the resident size
just before the call, inputs already allocated) belongs to that call alone. Math materialises the
(B, H, L, L) scores several times over; a configuration whose estimate exceeds --math-budget-gb (4 GB by
default) is not run and is reported as skipped. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH, HEADS, HEAD_DIM = 1, 8, 64
WINDOW = 256  # windowed case: each query sees itself and the 256 keys before it


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _measure_one(backend: str, pattern: str, length: int, threads: int, repeats: int) -> dict:
    """Runs inside the subprocess: one (backend, pattern, length) configuration."""
    import torch

    sys.path.insert(0, str(REPO))
    from zoo.layers.attention import MaskSpec, attention

    torch.set_num_threads(threads)
    mask = MaskSpec.causal() if pattern == "causal" else MaskSpec.sliding_window(WINDOW, 0)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(BATCH, HEADS, length, HEAD_DIM, generator=gen) for _ in range(3))
    with torch.inference_mode():
        # a small first call, so one-time set-up (kernels, thread pools) stays out of the figure
        warm = min(length, 2 * WINDOW + 64)
        attention(q[..., :warm, :], k[..., :warm, :], v[..., :warm, :], mask=mask, backend=backend)
        before = _status_kb("VmRSS")
        start = time.perf_counter()
        out = attention(q, k, v, mask=mask, backend=backend)
        first = time.perf_counter() - start
        peak = _status_kb("VmHWM")
        del out
        times = [first]
        for _ in range(repeats - 1):
            start = time.perf_counter()
            attention(q, k, v, mask=mask, backend=backend)
            times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_mb": max(0, peak - before) / 1024}


def _math_estimate_gb(length: int) -> float:
    """Scores, masked scores, probabilities and the bool mask of the math reference."""
    scores = BATCH * HEADS * length * length * 4
    return (3 * scores + length * length) / 1e9


def _run_child(backend: str, pattern: str, length: int, threads: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", backend, pattern, str(length), str(threads), str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _short(length: int) -> str:
    return f"{length // 1024}k" if length % 1024 == 0 else str(length)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="L = 512, 1024, 2048")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument(
        "--math-budget-gb", type=float, default=4.0, help="skip math runs estimated above this"
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backend, pattern, length, threads, repeats = args.child
        print(json.dumps(_measure_one(backend, pattern, int(length), int(threads), int(repeats))))
        return

    lengths = (512, 1024, 2048) if args.quick else (1024, 4096, 16384)
    results: dict[tuple[str, str, int], dict | None] = {}
    for length in lengths:
        repeats = 3 if length <= 4096 else 2
        for pattern in ("causal", "window"):
            results["sdpa", pattern, length] = _run_child("sdpa", pattern, length, args.threads, repeats)
            if _math_estimate_gb(length) <= args.math_budget_gb:
                results["math", pattern, length] = _run_child("math", pattern, length, args.threads, repeats)
            else:
                results["math", pattern, length] = None

    print(
        f"attention on CPU, B={BATCH} H={HEADS} D={HEAD_DIM} fp32, {args.threads} thread(s); "
        f"window = {WINDOW} past keys; time = best of runs, memory = peak RSS growth during one call"
    )
    print(f"{'pattern':<8}{'L':>7}  {'sdpa s':>9}{'math s':>9}{'speedup':>9}  {'sdpa MB':>9}{'math MB':>9}")
    figures: dict[str, float | str | int] = {"threads": args.threads, "window": WINDOW}
    for pattern in ("causal", "window"):
        for length in lengths:
            fast, slow = results["sdpa", pattern, length], results["math", pattern, length]
            assert fast is not None
            tag = f"{pattern}_{_short(length)}"
            figures[f"sdpa_{tag}_s"] = round(fast["seconds"], 4)
            figures[f"sdpa_{tag}_peak_mb"] = round(fast["peak_mb"], 1)
            if slow is None:
                note = f"skipped: math needs ~{_math_estimate_gb(length):.1f} GB > {args.math_budget_gb} GB"
                figures[f"math_{tag}"] = note
                print(
                    f"{pattern:<8}{length:>7}  {fast['seconds']:>9.3f}{'-':>9}{'-':>9}  "
                    f"{fast['peak_mb']:>9.1f}{'-':>9}   ({note})"
                )
                continue
            speedup = slow["seconds"] / fast["seconds"]
            figures[f"math_{tag}_s"] = round(slow["seconds"], 4)
            figures[f"math_{tag}_peak_mb"] = round(slow["peak_mb"], 1)
            figures[f"sdpa_{tag}_speedup_vs_math"] = round(speedup, 2)
            figures[f"sdpa_{tag}_memory_ratio_vs_math"] = round(
                fast["peak_mb"] / max(slow["peak_mb"], 1e-3), 4
            )
            print(
                f"{pattern:<8}{length:>7}  {fast['seconds']:>9.3f}{slow['seconds']:>9.3f}{speedup:>8.1f}x  "
                f"{fast['peak_mb']:>9.1f}{slow['peak_mb']:>9.1f}"
            )
    for pattern in ("causal", "window"):
        small, large = lengths[1], lengths[2]
        grow = results["sdpa", pattern, large]["peak_mb"] / max(
            results["sdpa", pattern, small]["peak_mb"], 1e-3
        )
        figures[f"sdpa_{pattern}_{_short(large)}_memory_vs_{_short(small)}"] = round(grow, 2)
        print(
            f"sdpa {pattern}: peak memory x{grow:.1f} from L={small} to L={large} "
            f"(linear growth would be x{large // small}, quadratic x{(large // small) ** 2})"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

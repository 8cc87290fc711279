"""XY-Tokenizer encode time: ours (valid frames + one-frame margin) vs the faithful 30 s-padded path.

Upstream pads every chunk to 30 s and runs both 12-layer encoders and the adapters on all 1500 frames;
`encode_ids_padded` is that computation in our code (checked against upstream in
tests/test_xytokenizer_parity.py). Both run here on the same clips and weights, in the same process: the
published architecture with the parity fixture's weights when ../shared/parity/xytokenizer/a exists
(else random weights, said so in the output). Times are the best of `--repeats` calls after a warm-up
(the padded path: best of `--padded-repeats`, no warm-up). The bench also reports whether the ids agree.

    python bench/xytokenizer.py                  # 3 s and 10 s clips, 2 threads
    python bench/xytokenizer.py --seconds 3 --threads 1

The last line printed is one JSON object of figures (ratios: padded time / ours).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import registry  # noqa: E402
from zoo.xytokenizer import XYTokenizer  # noqa: E402

SR = 16000


def speechlike(seconds: float, seed: int = 0) -> torch.Tensor:
    """A voiced, vibrato, amplitude-modulated harmonic signal with a little noise (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    n = int(round(seconds * SR))
    t = torch.arange(n, dtype=torch.float64) / SR
    f0 = 120 + 40 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    voice = sum(torch.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.5 * t)
    return (0.3 * envelope * voice + 0.01 * torch.randn(n, generator=gen, dtype=torch.float64)).float()


def build() -> tuple[XYTokenizer, str]:
    fixture = ROOT.parent / "shared" / "parity" / "xytokenizer" / "a"
    if (fixture / "manifest.json").is_file():
        from tests.parity import load_case

        case = load_case("xytokenizer", "a")
        return registry.convert("xytokenizer", case.state_dict(), case.upstream_config), "parity fixture a"
    torch.manual_seed(0)
    tok = registry.create_tokenizer("xytokenizer-emilia", kmeans_init=False).eval()
    return tok, "random (fixture absent)"


def best_time(fn: Callable[[], Any], repeats: int, warmup: bool) -> tuple[float, Any]:
    result = fn() if warmup else None
    best = math.inf
    for _ in range(repeats):
        del result
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 10.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--padded-repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    tok, weights = build()
    print(f"XY-Tokenizer (published architecture, weights: {weights}), {args.threads} thread(s), "
          f"built in {time.perf_counter() - started:.1f} s")
    figures: dict[str, Any] = {"weights": weights, "threads": args.threads}
    rows = []
    with torch.no_grad():
        for i, seconds in enumerate(args.seconds):
            wave = speechlike(seconds, seed=i)[None, None]
            ours_s, ours = best_time(lambda w=wave: tok.encode_ids(w), args.repeats, warmup=True)
            padded_s, padded = best_time(lambda w=wave: tok.encode_ids_padded(w), args.padded_repeats, warmup=False)
            same = int((ours == padded).all(-1).sum())
            total = ours.shape[1]
            tag = f"{seconds:g}s".replace(".", "p")
            rows.append((f"{seconds:g} s", ours_s, padded_s, padded_s / ours_s, f"{same}/{total}"))
            figures.update({
                f"xy_{tag}_ours_s": round(ours_s, 4),
                f"xy_{tag}_padded_s": round(padded_s, 4),
                f"xy_{tag}_speedup_vs_padded": round(padded_s / ours_s, 2),
                f"xy_{tag}_ids_identical": same == total,
                f"xy_{tag}_frames_identical": same,
                f"xy_{tag}_frames": total,
            })
    print(f"{'clip':>6} | {'ours (s)':>9} | {'30 s padded (s)':>15} | {'speedup':>7} | frames with identical ids")
    print("-" * 72)
    for clip, ours_s, padded_s, ratio, same in rows:
        print(f"{clip:>6} | {ours_s:9.3f} | {padded_s:15.3f} | {ratio:6.1f}x | {same}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

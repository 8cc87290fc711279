"""Flow-decoder decode time against the number of ODE steps: UniFlow (pixels) and TaDiCodec (mel).

Decode cost is a fixed part (UniFlow: lifting the latent through the global blocks; TaDiCodec: the
condition, and the vocoder after the loop) plus one (UniFlow) or two (TaDiCodec, with CFG) velocity
evaluations per step. Each model is built with random weights (speed does not depend on them) and
decodes the same tokens and noise at each step count; times are the best of `--repeats` decodes after
one warm-up, in this process, on one device.

    python bench/flow.py                          # UniFlow and TaDiCodec full size, CPU, steps 1,2,4,8
                                                  # (tens of minutes on 2 busy cores: a full UniFlow decode
                                                  # is ~45 s at 1 step plus ~20 s a step there)
    python bench/flow.py --families uniflow --steps 1,4,16 --device cuda
    python bench/flow.py --quick                  # tiny variants: a smoke run of the script

The last line printed is one JSON object: per family the seconds at each step count, the seconds per
extra step, and `<family>_<n>_steps_vs_1_step` time ratios (each against the same family's 1-step
decode in this run). Families that are not installed report null.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

VARIANTS = {  # family -> (full variant, tiny variant)
    "uniflow": ("uniflow-internvit300m-448", "uniflow-tiny"),
    "tadicodec": ("tadicodec-24khz", "tadicodec-tiny"),
}


def best_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocations, kernel choice)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def build(family: str, quick: bool, device: torch.device) -> Any | None:
    import zoo
    from registry.errors import ConfigError

    full, tiny = VARIANTS[family]
    names = zoo.list_tokenizers(f"{family}*")
    name = tiny if quick else full
    if name not in names:
        candidates = [n for n in names if n.endswith("-tiny") == quick]
        if not candidates:
            return None
        name = candidates[0]
    torch.manual_seed(0)
    try:
        tok = zoo.create_tokenizer(name)
    except ConfigError:
        return None
    return tok.eval().to(device)


def uniflow_job(tok: Any, batch: int, device: torch.device) -> Callable[[int], Any]:
    cfg = tok.config
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(batch, tok.grid, tok.grid, cfg.latent_channels, generator=g).to(device)
    noise = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g).to(device)
    return lambda steps: tok.decode(latent, noise=noise, steps=steps)


def tadicodec_job(tok: Any, batch: int, device: torch.device, seconds: float) -> Callable[[int], Any]:
    """Random ids for `seconds` of speech and 4 text tokens a second (what decoding conditions on)."""
    spec = tok.spec
    g = torch.Generator().manual_seed(0)
    frames = max(2, round(seconds * float(spec.token_rate)))
    ids = torch.randint(0, int(spec.codebook_sizes[0]), (batch, frames), generator=g).to(device)
    vocab = int(getattr(tok.config, "text_vocab_size", 1000))
    text_ids = torch.randint(0, min(vocab, 32000), (batch, max(1, round(4 * seconds))), generator=g).to(device)
    tokens = tok.tokens_from_upstream(ids) if hasattr(tok, "tokens_from_upstream") else ids
    return lambda steps: tok.decode(tokens, text_ids=text_ids, steps=steps, generator=torch.Generator().manual_seed(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="uniflow,tadicodec")
    parser.add_argument("--steps", default="1,2,4,8", help="comma-separated step counts (1 is always added)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed decodes per step count (after a warm-up)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0, help="TaDiCodec clip length")
    parser.add_argument("--quick", action="store_true", help="tiny variants, steps 1,2,4")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = sorted({1, *(int(s) for s in args.steps.split(","))})
    if args.quick:
        steps = [1, 2, 4]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in VARIANTS]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {sorted(VARIANTS)}")

    figures: dict[str, Any] = {"device": str(device), "threads": args.threads, "batch": args.batch,
                               "quick": args.quick}
    rows: list[tuple[str, str, int, float, float]] = []
    for family in families:
        tok = build(family, args.quick, device)
        if tok is None:
            print(f"{family}: not installed here (no registered variant); skipped")
            figures[f"{family}_seconds"] = None
            continue
        job = uniflow_job(tok, args.batch, device) if family == "uniflow" else tadicodec_job(
            tok, args.batch, device, args.seconds)
        times: dict[int, float] = {}
        with torch.inference_mode():
            for n in steps:
                times[n] = best_time(lambda n=n, job=job: job(n), args.repeats, device)
                rows.append((family, tok.name, n, times[n], times[n] / times[1]))
        top = steps[-1]
        figures[f"{family}_variant"] = tok.name
        figures[f"{family}_seconds"] = {str(n): round(t, 4) for n, t in times.items()}
        figures[f"{family}_seconds_per_extra_step"] = round((times[top] - times[1]) / (top - 1), 4) if top > 1 else None
        for n in steps[1:]:
            figures[f"{family}_{n}_steps_vs_1_step"] = round(times[n] / times[1], 3)
        del tok, job
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(f"{'family':<10} {'variant':<28} {'steps':>5} {'decode s':>10} {'vs 1 step':>10}")
    for family, variant, n, seconds, ratio in rows:
        print(f"{family:<10} {variant:<28} {n:>5} {seconds:>10.4f} {ratio:>10.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

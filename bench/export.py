"""PyTorch eager against onnxruntime, per family, from one run: the whole encode / decode API on both sides.

    python bench/export.py                         # every registered *-tiny variant
    python bench/export.py --variants wavtokenizer-tiny uniwetok-tiny --threads 2
    python bench/export.py --quick                 # two small families (a smoke run)

Each variant is exported with `export.to_onnx` (timed), then `tok.encode` / `tok.decode` (PyTorch, eager,
no_grad) and `OnnxTokenizer.encode` / `.decode` (onnxruntime + numpy, pre/post-processing included) run
on the same input with the same thread count; times are the best of --repeats after one warm-up call.
Stochastic decoders get the same noise on both sides, so outputs are compared too (ids equal, max abs
error of the reconstruction). Tiny variants have toy widths: the ratios show per-call overheads as much
as kernel speed; pass full-size variant names (random weights, minutes to export) for deployment figures.
The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import best_of  # noqa: E402


def decode_options(tok: Any, tokens: Any) -> dict[str, Any]:
    """Fixed noise (and text ids) for the stochastic decoders, so both runtimes decode the same draw."""
    import torch

    g = torch.Generator().manual_seed(0)
    if tok.family == "uniwetok":
        b, h, w, _ = tokens.ids.shape
        return {"noise": torch.randn(b, h, w, tok.config.z_channels, generator=g)}
    if tok.family == "uniflow":
        side = tok.config.image_size
        return {"noise": torch.randn(tokens.latent.shape[0], tok.config.in_channels, side, side, generator=g)}
    if tok.family == "tadicodec":
        b, n = tokens.ids.shape
        return {"text_ids": torch.randint(0, tok.config.text_vocab_size, (b, 8), generator=g),
                "noise": torch.randn(b, tok.config.down_sample_factor * n, tok.config.n_mels, generator=g)}
    return {}


def bench_variant(name: str, threads: int, repeats: int, folder: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    import zoo
    from export import OnnxTokenizer, to_onnx
    from export.plans import plan_for

    torch.manual_seed(0)
    tok = zoo.create_tokenizer(name).eval()
    start = time.perf_counter()
    to_onnx(tok, folder)
    export_s = time.perf_counter() - start
    onnx_tok = OnnxTokenizer(folder, threads=threads)
    x = plan_for(tok).graphs[0].example[0]  # the encoder graph's traced input: a canonical media batch
    with torch.no_grad():
        ref = tok.encode(x)
        torch_encode = best_of(lambda: tok.encode(x), repeats)
    x_np = x.numpy()
    ours = onnx_tok.encode(x_np)
    ort_encode = best_of(lambda: onnx_tok.encode(x_np), repeats)
    row: dict[str, Any] = {
        "variant": name, "family": tok.family, "input": list(x.shape), "export_s": export_s,
        "torch_encode_s": torch_encode, "ort_encode_s": ort_encode,
        "ids_equal": None if ref.ids is None else bool(np.array_equal(ours.ids, ref.ids.numpy())),
    }
    if tok.spec.can_decode:
        options = decode_options(tok, ref)
        np_options = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in options.items()}
        with torch.no_grad():
            want = tok.decode(ref, **options)
            row["torch_decode_s"] = best_of(lambda: tok.decode(ref, **options), repeats)
        got = onnx_tok.decode(ours, **np_options)
        row["ort_decode_s"] = best_of(lambda: onnx_tok.decode(ours, **np_options), repeats)
        row["max_abs_error"] = float(np.abs(got - want.numpy()).max())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", help="registered names (default: every *-tiny variant)")
    parser.add_argument("--quick", action="store_true", help="wavtokenizer-tiny and uniwetok-tiny only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from registry import list_tokenizers

    torch.set_num_threads(args.threads)
    names = args.variants or (["wavtokenizer-tiny", "uniwetok-tiny"] if args.quick else list_tokenizers("*-tiny"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(bench_variant(name, args.threads, args.repeats, Path(tmp) / name))
            print(f"  done {name} (export {rows[-1]['export_s']:.0f} s)", file=sys.stderr)

    print(f"PyTorch eager vs onnxruntime, whole encode/decode API, {args.threads} threads, best of {args.repeats}")
    header = ("variant", "input", "export s", "enc torch ms", "enc ort ms", "enc speedup", "dec torch ms",
              "dec ort ms", "dec speedup", "ids equal", "max abs err")
    table = [header]
    figures: dict[str, Any] = {"threads": args.threads, "repeats": args.repeats}
    for r in rows:
        enc = r["torch_encode_s"] / r["ort_encode_s"]
        dec = r["torch_decode_s"] / r["ort_decode_s"] if "ort_decode_s" in r else None
        table.append((
            r["variant"], "x".join(str(s) for s in r["input"]), f"{r['export_s']:.0f}",
            f"{1000 * r['torch_encode_s']:.1f}", f"{1000 * r['ort_encode_s']:.1f}", f"{enc:.2f}",
            f"{1000 * r['torch_decode_s']:.1f}" if dec else "-", f"{1000 * r['ort_decode_s']:.1f}" if dec else "-",
            f"{dec:.2f}" if dec else "-", "-" if r["ids_equal"] is None else str(r["ids_equal"]),
            f"{r['max_abs_error']:.1e}" if dec else "-",
        ))
        family = r["family"]
        figures[f"{family}_encode_speedup_ort_vs_torch"] = round(enc, 3)
        if dec:
            figures[f"{family}_decode_speedup_ort_vs_torch"] = round(dec, 3)
            figures[f"{family}_decode_max_abs_error"] = r["max_abs_error"]
        figures[f"{family}_ids_equal"] = r["ids_equal"]
        figures[f"{family}_export_s"] = round(r["export_s"], 1)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        cells = [str(c).rjust(w) for c, w in zip(row, widths, strict=True)]
        cells[0] = str(row[0]).ljust(widths[0])
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""S3Tokenizer on CPU: our PyTorch encoder against our exported ONNX graph in onnxruntime, one run.

    python bench/s3tokenizer.py              # full-size v2 (random weights), 5 s and 20 s clips, batch 4 x 5 s
    python bench/s3tokenizer.py --quick      # the tiny variant (a smoke run)

Upstream users report the official ONNX tokenizer being slower than torch on CPU (S3Tokenizer issue #41).
This measures ours, waveform -> ids, both sides from the same model and the same inputs, with the same
thread count (torch intra-op threads = onnxruntime intra_op_num_threads). The ONNX graph is
`encoder_module()` exported with torch.onnx.export(dynamo=True), opset 18, dynamic batch and length.
Times are the best of --repeats after one warm-up call; ids are checked to agree. The last line is
one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import best_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="s3tokenizer-v2-25hz")
    parser.add_argument("--quick", action="store_true", help="tiny variant, short clips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch

    import registry

    torch.set_num_threads(args.threads)
    variant = "s3tokenizer-tiny" if args.quick else args.variant
    torch.manual_seed(0)
    tok = registry.create_tokenizer(variant).eval()
    cases = [("1 x 5 s", 1, 5.0), ("1 x 20 s", 1, 20.0), ("4 x 5 s", 4, 5.0)]
    if args.quick:
        cases = [("1 x 2 s", 1, 2.0), ("2 x 2 s", 2, 2.0)]
    gen = torch.Generator().manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.onnx"
        batch = torch.export.Dim("batch", min=1, max=64)
        samples = torch.export.Dim("samples", min=401, max=480000)
        start = time.perf_counter()
        torch.onnx.export(tok.encoder_module(), (torch.randn(2, 1, 32000, generator=gen) * 0.1,), str(path),
                          dynamo=True, opset_version=18, input_names=["audio"],
                          dynamic_shapes=(({0: batch, 2: samples},),), verbose=False)
        export_s = time.perf_counter() - start
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        start = time.perf_counter()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session_s = time.perf_counter() - start

        rows, figures = [], {"variant": variant, "threads": args.threads, "export_s": round(export_s, 2),
                             "ort_session_s": round(session_s, 2)}
        for label, count, seconds in cases:
            x = torch.randn(count, 1, int(seconds * 16000), generator=gen) * 0.1
            with torch.inference_mode():
                ours = tok.encode_ids(x)
                torch_s = best_of(lambda x=x: tok.encode_ids(x), args.repeats)
            feed = {"audio": x.numpy()}
            out = session.run(None, feed)[0]
            agree = float(np.mean(out == ours.numpy()))
            ort_s = best_of(lambda feed=feed: session.run(None, feed), args.repeats)
            audio_s = count * seconds
            rows.append((label, torch_s, ort_s, torch_s / ort_s, audio_s / torch_s, audio_s / ort_s, agree))
            key = f"{count}x{seconds:g}s"
            figures[f"torch_s_{key}"] = round(torch_s, 4)
            figures[f"ort_s_{key}"] = round(ort_s, 4)
            figures[f"s3_ort_speedup_vs_torch_{key}"] = round(torch_s / ort_s, 3)
            figures[f"ids_agree_{key}"] = agree

    print(f"{variant}: waveform -> ids on CPU, {args.threads} threads, best of {args.repeats}")
    print(f"export {export_s:.1f} s, onnxruntime session {session_s:.1f} s")
    header = ("input", "torch s", "ort s", "ort speedup", "torch x RT", "ort x RT", "ids agree")
    print(f"{header[0]:<10} " + " ".join(f"{h:>11}" for h in header[1:]))
    for label, torch_s, ort_s, ratio, rt_torch, rt_ort, agree in rows:
        cells = f"{torch_s:>11.3f} {ort_s:>11.3f} {ratio:>11.2f} {rt_torch:>11.1f} {rt_ort:>11.1f} {agree:>11.4f}"
        print(f"{label:<10} {cells}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

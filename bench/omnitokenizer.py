"""Time and peak memory of OmniTokenizer encode + decode on a 17-frame 256x256 clip (full-size model).

Upstream users report running out of a 16 GB card on such clips (FoundationVision/OmniTokenizer#5).
Each configuration runs in its own process so its peak resident memory (Linux VmHWM, reset before each
phase) is its own; the model is a random-init `omnitokenizer-imagenet-k600` (the published size). Rows:

* `ours`: the default: SDPA attention, attention and feed-forward split into <= 4096-token pieces;
* `unchunked`: the same without splitting (shows what chunking saves);
* `math attention`: the reference backend, which materialises every attention matrix as upstream's
  non-SDPA branch does (a baseline for what naive attention costs; encode only, it is slow).

Every row must produce the same ids (checked). Last line: one JSON object of figures.
Usage: python bench/omnitokenizer.py [--frames 17] [--size 256] [--skip-math]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _status(field: str) -> float:
    """A /proc/self/status memory field in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (this bench needs Linux)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(chunk: int, backend: str, frames: int, size: int, decode: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    import zoo  # noqa: F401  (registers the families)
    from registry import create_tokenizer
    from zoo.layers.attention import attention_backend

    torch.manual_seed(0)
    tok = create_tokenizer("omnitokenizer-imagenet-k600", chunk_tokens=chunk).eval()
    x = torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out: dict = {"model_mib": _status("VmRSS")}
    with attention_backend(backend), torch.no_grad():
        base = _status("VmRSS")
        _reset_peak()
        start = time.perf_counter()
        tokens = tok.encode(x)
        out["encode_s"] = time.perf_counter() - start
        out["encode_peak_mib"] = _status("VmHWM") - base
        if decode:
            base = _status("VmRSS")
            _reset_peak()
            start = time.perf_counter()
            video = tok.decode(tokens)
            out["decode_s"] = time.perf_counter() - start
            out["decode_peak_mib"] = _status("VmHWM") - base
            out["shape"] = list(video.shape)
    ids = tokens.ids
    out["ids_shape"] = list(ids.shape)
    out["ids_checksum"] = int((ids.flatten() * torch.arange(1, ids.numel() + 1)).sum() % 1_000_000_007)
    return out


def run_child(args: list[str]) -> dict:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--skip-math", action="store_true")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        chunk, backend, frames, size, decode = opts.child
        print(json.dumps(child(int(chunk), backend, int(frames), int(size), decode == "1")))
        return

    import torch

    shape = f"{opts.frames}x{opts.size}x{opts.size}"
    print(f"OmniTokenizer (imagenet-k600 size, random weights) on a {shape} clip; CPU, "
          f"{torch.get_num_threads()} thread(s); peak = resident-memory high-water mark above the loaded model")
    rows = {
        "ours": run_child(["4096", "sdpa", str(opts.frames), str(opts.size), "1"]),
        "unchunked": run_child([str(10**9), "sdpa", str(opts.frames), str(opts.size), "1"]),
    }
    if not opts.skip_math:
        rows["math attention"] = run_child(["4096", "math", str(opts.frames), str(opts.size), "0"])
    print(f"{'configuration':<16}{'encode s':>10}{'encode peak MiB':>17}{'decode s':>10}{'decode peak MiB':>17}"
          f"{'ids':>14}")
    reference = rows["ours"]["ids_checksum"]
    for name, row in rows.items():
        same = "same" if row["ids_checksum"] == reference else "DIFFERENT"
        decode_s = f"{row['decode_s']:.1f}" if "decode_s" in row else "-"
        decode_peak = f"{row['decode_peak_mib']:.0f}" if "decode_peak_mib" in row else "-"
        print(f"{name:<16}{row['encode_s']:>10.1f}{row['encode_peak_mib']:>17.0f}{decode_s:>10}{decode_peak:>17}"
              f"{same:>14}")
    ours, plain = rows["ours"], rows["unchunked"]
    print(f"ids {ours['ids_shape']}, reconstruction {ours['shape']}; the process holds {ours['model_mib']:.0f} MiB "
          "once torch and the model are loaded (weights: 206 MiB)")
    figures = {
        "omni_clip": shape,
        "omni_encode_s": round(ours["encode_s"], 2),
        "omni_decode_s": round(ours["decode_s"], 2),
        "omni_encode_peak_mib": round(ours["encode_peak_mib"], 1),
        "omni_decode_peak_mib": round(ours["decode_peak_mib"], 1),
        "omni_peak_mib": round(max(ours["encode_peak_mib"], ours["decode_peak_mib"]), 1),
        "omni_peak_saving_vs_unchunked": round(
            max(plain["encode_peak_mib"], plain["decode_peak_mib"])
            / max(ours["encode_peak_mib"], ours["decode_peak_mib"]), 2),
        "omni_ids_identical": all(row["ids_checksum"] == reference for row in rows.values()),
    }
    if "math attention" in rows:
        figures["omni_encode_peak_saving_vs_math"] = round(
            rows["math attention"]["encode_peak_mib"] / ours["encode_peak_mib"], 2)
        figures["omni_encode_speedup_vs_math"] = round(rows["math attention"]["encode_s"] / ours["encode_s"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""WavTokenizer on CPU: real-time factor of encode and decode for 10 s of 24 kHz audio, PyTorch vs onnxruntime.

One run measures, on the same machine and thread count: PyTorch eager `encode_ids` / `decode_ids` of the
full-size large-speech-75 architecture (random weights with a random codebook: the arithmetic and the
cost are the published model's), the same graphs exported with torch.onnx (dynamo) and run in
onnxruntime, and the ISTFT head alone against the complex-FFT + fold formulation upstream uses. RTF is
seconds of compute per second of audio (lower is faster). The last line is one JSON object.

    python bench/wavtokenizer.py [--seconds 10] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ is sys.path[0]; drop it so bench scripts named like stdlib modules (tokenize.py)
# cannot shadow them, and put the repository root first instead.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(_BENCH.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import zoo  # noqa: E402
from bench.timing import best_of  # noqa: E402


def speechlike(seconds: float, rate: int = 24000, seed: int = 0) -> torch.Tensor:
    """A harmonic tone with vibrato plus noise, peak 0.5, shaped (1, 1, N)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140.0 + 20.0 * np.sin(2 * np.pi * 4.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) + 0.02 * rng.standard_normal(t.shape)
    x = 0.5 * x / np.abs(x).max()
    return torch.from_numpy(x.astype(np.float32)).view(1, 1, -1)


def upstream_style_head(head: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The ISTFT head as upstream computes it: complex spectrum, irfft, fold overlap-add."""
    istft = head.istft
    log_mag, phase = head.out(x).transpose(1, 2).chunk(2, dim=1)
    spec = torch.exp(log_mag).clip(max=1e2) * (torch.cos(phase) + 1j * torch.sin(phase))
    n_fft, hop, frames = istft.n_fft, istft.hop_length, spec.shape[-1]
    pad = (n_fft - hop) // 2
    size = (frames - 1) * hop + n_fft
    y = torch.fft.irfft(spec, n_fft, dim=1) * istft.window[None, :, None]
    y = F.fold(y, (1, size), (1, n_fft), stride=(1, hop))[:, 0, 0, pad:-pad]
    env = F.fold(istft.window.square().expand(1, frames, -1).transpose(1, 2), (1, size), (1, n_fft), stride=(1, hop))
    return y / env.squeeze()[pad:-pad]


def export(module: torch.nn.Module, args: tuple, path: Path, names: list[str], shapes: tuple) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=18, input_names=names,
                          dynamic_shapes=shapes, verbose=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="wavtokenizer-large-speech-75")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = zoo.create_tokenizer(args.variant, kmeans_init=False).eval()
    x = speechlike(args.seconds, tok.config.sample_rate)
    audio_s = x.shape[-1] / tok.config.sample_rate

    with torch.inference_mode():
        ids = tok.encode_ids(x)
        wave = tok.decode_ids(ids)
        enc_torch = best_of(lambda: tok.encode_ids(x), args.repeats)
        dec_torch = best_of(lambda: tok.decode_ids(ids), args.repeats)
        frames = tok.backbone(tok.quantizer.lookup(ids).transpose(1, 2), 0)
        head_ours = best_of(lambda: tok.head(frames), args.repeats * 3)
        head_fft = best_of(lambda: upstream_style_head(tok.head, frames), args.repeats * 3)
        head_diff = float((tok.head(frames) - upstream_style_head(tok.head, frames)).abs().max())

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        batch = torch.export.Dim("batch", min=1, max=64)
        samples = torch.export.Dim("samples", min=tok.config.hop_length, max=24000 * 3600)
        steps = torch.export.Dim("frames", min=2, max=75 * 3600)
        enc_export = export(tok.encoder_module(), (x,), Path(tmp) / "enc.onnx", ["audio"],
                            (({0: batch, 2: samples},),))
        dec_export = export(tok.decoder_module(), (ids,), Path(tmp) / "dec.onnx", ["ids"], (({0: batch, 1: steps},),))
        enc = ort.InferenceSession(str(Path(tmp) / "enc.onnx"), options, providers=["CPUExecutionProvider"])
        dec = ort.InferenceSession(str(Path(tmp) / "dec.onnx"), options, providers=["CPUExecutionProvider"])
        x_np, ids_np = x.numpy(), ids.numpy()
        ids_ort = enc.run(None, {"audio": x_np})[0]
        wave_ort = dec.run(None, {"ids": ids_np})[0]
        enc_ort = best_of(lambda: enc.run(None, {"audio": x_np}), args.repeats)
        dec_ort = best_of(lambda: dec.run(None, {"ids": ids_np}), args.repeats)

    ids_equal = bool(np.array_equal(ids_ort, ids_np))
    wave_diff = float(np.abs(wave_ort - wave.numpy()).max())
    rows = [
        ("encode", "pytorch eager", enc_torch),
        ("encode", "onnxruntime", enc_ort),
        ("decode", "pytorch eager", dec_torch),
        ("decode", "onnxruntime", dec_ort),
        ("istft head", "ours (eager)", head_ours),
        ("istft head", "upstream irfft + fold", head_fft),
    ]
    print(f"WavTokenizer {args.variant}: {audio_s:.1f} s of audio ({x.shape[-1]} samples, {ids.shape[1]} tokens), "
          f"CPU, {args.threads} threads, best of {args.repeats}")
    print(f"{'part':<12} {'backend':<22} {'seconds':>9} {'RTF':>8}")
    for part, backend, seconds in rows:
        print(f"{part:<12} {backend:<22} {seconds:>9.3f} {seconds / audio_s:>8.4f}")
    print(f"onnx export: encoder {enc_export:.0f} s, decoder {dec_export:.0f} s; onnxruntime ids equal: {ids_equal}; "
          f"wave max abs diff {wave_diff:.2e}; head max abs diff vs irfft {head_diff:.2e}")
    print(json.dumps({
        "audio_seconds": audio_s,
        "threads": args.threads,
        "encode_rtf_torch": enc_torch / audio_s,
        "encode_rtf_onnx": enc_ort / audio_s,
        "decode_rtf_torch": dec_torch / audio_s,
        "decode_rtf_onnx": dec_ort / audio_s,
        "encode_onnx_speedup_vs_torch": enc_torch / enc_ort,
        "decode_onnx_speedup_vs_torch": dec_torch / dec_ort,
        "istft_head_speedup_vs_upstream_fold": head_fft / head_ours,
        "onnx_ids_equal": ids_equal,
        "onnx_wave_max_abs_diff": wave_diff,
        "head_max_abs_diff_vs_irfft": head_diff,
    }))


if __name__ == "__main__":
    main()

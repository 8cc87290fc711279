"""MOSS-Audio-Tokenizer on CPU: one-shot vs streaming, float32 vs bfloat16, for the full-size architecture.

One run, same machine and thread count, on `--seconds` of speech-like 24 kHz audio: float32 `encode` /
`decode` (real-time factor: compute seconds per audio second, lower is faster), the same clip through
`encode_stream()` / `decode_stream()` in `--chunk`-second chunks (ids must be identical to one-shot,
waveform within 1e-4), then the model cast in place to bfloat16 (the quantizer stays float32): its
speed, the share of ids equal to float32's, and the waveform error relative to the float32 output.
Weights: `--weights random` (seeded init of the published architecture, LayerScale 0.01) or `--weights
fixture` (../shared/parity/mosstokenizer/a, LayerScale ~1: every layer at full strength; ~5 min to draw).
About 8 GB of memory. The last line is one JSON object.

    python bench/mosstokenizer.py [--seconds 4] [--chunk 0.32] [--threads 2] [--weights random|fixture]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import registry  # noqa: E402
import zoo  # noqa: E402


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def speechlike(seconds: float, rate: int = 24000, seed: int = 0) -> torch.Tensor:
    """A harmonic tone with vibrato and a chirp plus noise, peak 0.5, shaped (1, 1, N)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140.0 + 20.0 * np.sin(2 * np.pi * 4.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) + 0.3 * np.sin(2 * np.pi * (500 + 800 * t) * t)
    x = x + 0.02 * rng.standard_normal(t.shape)
    return torch.from_numpy((0.5 * x / np.abs(x).max()).astype(np.float32)).view(1, 1, -1)


def build(weights: str) -> zoo.Tokenizer:
    if weights == "fixture":
        from tests.parity import load_case

        case = load_case("mosstokenizer")
        return registry.convert("mosstokenizer", case.state_dict(), case.upstream_config)
    torch.manual_seed(0)
    return zoo.create_tokenizer("mosstokenizer-24khz").eval()


def streamed(tok: zoo.Tokenizer, audio: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    encoder = tok.encode_stream()
    ids = torch.cat([*(encoder.push(audio[..., i : i + chunk]) for i in range(0, audio.shape[-1], chunk)),
                     encoder.flush()], dim=1)
    frames = chunk // tok.hop
    decoder = tok.decode_stream()
    wave = torch.cat([decoder.push(ids[:, i : i + frames]) for i in range(0, ids.shape[1], frames)], dim=-1)
    return ids, wave[..., : audio.shape[-1]].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--chunk", type=float, default=0.32, help="streaming chunk in seconds (multiple of 0.08)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", choices=("random", "fixture"), default="random")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    build_s, tok = timed(lambda: build(args.weights))
    audio = speechlike(args.seconds)
    chunk = int(round(args.chunk * 24000))
    with torch.no_grad():
        tok.encode(audio[..., :1920])  # warm-up
        enc32, tokens = timed(lambda: tok.encode(audio))
        dec32, wave32 = timed(lambda: tok.decode(tokens))
        stream_s, (stream_ids, stream_wave) = timed(lambda: streamed(tok, audio, chunk))
        tok.to(torch.bfloat16)
        tok.encode(audio[..., :1920])
        enc16, tokens16 = timed(lambda: tok.encode(audio))
        dec16, wave16 = timed(lambda: tok.decode(tokens))
    ids, ids16 = tokens.ids, tokens16.ids
    agree_all = float((ids == ids16).float().mean())
    agree_first8 = float((ids[..., :8] == ids16[..., :8]).float().mean())
    agree_first1 = float((ids[..., 0] == ids16[..., 0]).float().mean())
    scale = float(wave32.abs().max())
    bf16_rel = float((wave16 - wave32).abs().max()) / scale
    stream_diff = float((stream_wave - wave32).abs().max())
    stream_equal = bool(torch.equal(stream_ids, ids))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    rtf = args.seconds
    print(f"MOSS-Audio-Tokenizer, full size, {args.weights} weights; {args.seconds:g} s of audio, "
          f"{args.threads} threads; built in {build_s:.0f} s; peak RSS {peak_gb:.1f} GB")
    print(f"{'path':<34}{'seconds':>9}{'RTF':>8}")
    rows = [
        ("float32 encode (one-shot)", enc32), ("float32 decode (one-shot)", dec32),
        (f"float32 stream enc+dec ({args.chunk:g} s)", stream_s),
        ("bfloat16 encode", enc16), ("bfloat16 decode", dec16),
    ]
    for name, sec in rows:
        print(f"{name:<34}{sec:>9.2f}{sec / rtf:>8.2f}")
    print(f"streaming ids equal to one-shot: {stream_equal}; waveform max abs diff {stream_diff:.2e}")
    print(f"bfloat16 vs float32: ids equal {agree_all:.1%} (codebook 1: {agree_first1:.1%}, first 8: "
          f"{agree_first8:.1%}); waveform max abs error {bf16_rel:.2%} of the float32 peak")
    print(json.dumps({
        "weights": args.weights,
        "audio_seconds": args.seconds,
        "threads": args.threads,
        "encode_rtf_fp32": enc32 / rtf,
        "decode_rtf_fp32": dec32 / rtf,
        "stream_rtf_fp32": stream_s / rtf,
        "stream_slowdown_vs_oneshot": stream_s / (enc32 + dec32),
        "stream_ids_equal": stream_equal,
        "stream_wave_max_abs_diff": stream_diff,
        "encode_rtf_bf16": enc16 / rtf,
        "decode_rtf_bf16": dec16 / rtf,
        "bf16_encode_speedup_vs_fp32": enc32 / enc16,
        "bf16_decode_speedup_vs_fp32": dec32 / dec16,
        "bf16_ids_equal_fraction": agree_all,
        "bf16_ids_equal_fraction_codebook1": agree_first1,
        "bf16_ids_equal_fraction_first8": agree_first8,
        "bf16_wave_max_abs_error_rel_peak": bf16_rel,
        "peak_rss_gb": peak_gb,
    }))


if __name__ == "__main__":
    main()

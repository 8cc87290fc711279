"""Audio codecs in onnxruntime (recipe "audio_codec": WavTokenizer, MOSS, XY-Tokenizer) and the shared
audio input path (canonical layout, per-clip lengths, resampling to the model's rate).

Clips are encoded in groups of equal length, so each clip gets the ids it gets alone, which is what
the PyTorch tokenizers promise for right-padded batches. Windowed models (XY-Tokenizer's 30 s encoder
windows every 20 s, 375-code decoder windows every 250) are windowed here as in PyTorch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from export.errors import InputError, UnsupportedError
from export.handlers.base import Handler
from export.media import canonical, int_ids, sample_counts
from export.resample import resample
from export.tokens import NumpyTokens


def audio_input(handler: Handler, x: Any, lengths: Any, sample_rate: int | None) -> tuple[np.ndarray, list[int]]:
    """(B, C, N) float32 at the model's rate and each clip's sample count."""
    spec = handler.spec
    wave = canonical(x, "audio", spec.channels)
    batch, _, total = wave.shape
    counts = sample_counts(lengths, batch, total)
    target = int(spec.sample_rate)
    if sample_rate is not None and int(sample_rate) != target:
        if int(sample_rate) != sample_rate or int(sample_rate) <= 0:
            raise InputError(f"sample_rate must be a positive whole number of Hz; got {sample_rate}")
        if handler.recipe.get("resample_warns", True):
            warnings.warn(
                f"{handler.tok.family} runs at {target} Hz; resampling the {int(sample_rate)} Hz input (band-limited "
                f"polyphase). Pass {target} Hz audio to skip this.",
                stacklevel=4,
            )
        clips = [resample(wave[b, :, : counts[b]], int(sample_rate), target) for b in range(batch)]
        counts = [int(c.shape[-1]) for c in clips]
        wave = np.stack([np.pad(c, ((0, 0), (0, max(counts) - c.shape[-1]))) for c in clips])
    return wave, counts


def by_length(items: list[np.ndarray], run: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """run() on stacks of equal-length items (last axis), results returned in the items' order."""
    out: list[np.ndarray | None] = [None] * len(items)
    for size in sorted({a.shape[-1] for a in items}):
        rows = [i for i, a in enumerate(items) if a.shape[-1] == size]
        result = run(np.stack([items[i] for i in rows]))
        for j, i in enumerate(rows):
            out[i] = result[j]
    return out  # type: ignore[return-value]


def stack_ids(pieces: list[np.ndarray]) -> np.ndarray:
    """Per-clip ids (T_i, ...) -> (B, T_max, ...), zero past each clip."""
    longest = max(p.shape[0] for p in pieces)
    return np.stack([np.pad(p, [(0, longest - p.shape[0])] + [(0, 0)] * (p.ndim - 1)) for p in pieces])


class AudioCodec(Handler):
    """Waveform <-> ids (B, T) or (B, T, Q) with per-clip lengths; decode trims like the PyTorch decode."""

    def encode(self, x: Any, lengths: Any = None, sample_rate: int | None = None, **options: Any) -> NumpyTokens:
        r = self.recipe
        depth_option = r.get("depth_option", False)
        self.reject_unknown(options, ("num_quantizers",) if depth_option else (), "encode")
        depth = self._depth(options.get("num_quantizers"))
        wave, counts = audio_input(self, x, lengths, sample_rate)
        short = min(counts)
        if short < r["min_samples"]:
            raise InputError(
                f"audio too short: {short} samples; {self.tok.family} needs at least {r['min_samples']} "
                f"({1000 * r['min_samples'] / self.spec.sample_rate:.1f} ms at {self.spec.sample_rate} Hz). "
                "Pad the clip with silence or leave it out."
            )
        clips = [wave[b, :, : counts[b]] for b in range(wave.shape[0])]
        pieces = self._windowed(clips) if r.get("encode_window") else by_length(clips, lambda w: self.run("encoder", w))
        ids = stack_ids(pieces)
        if depth is not None:
            ids = ids[..., :depth]
        meta = dict(r.get("meta") or {})
        fields: dict[str, Any] = {}
        if r.get("multi_codebook"):
            fields["codebook_sizes"] = (r["codebook_size"],) * int(ids.shape[-1])
            if depth_option:
                meta["num_quantizers"] = int(ids.shape[-1])
        return self.tok.make_tokens(
            ids.astype(np.int64),
            grid=(int(ids.shape[1]),),
            lengths=np.asarray([p.shape[0] for p in pieces], dtype=np.int64),
            original_size=np.asarray(counts, dtype=np.int64),
            meta=meta,
            **fields,
        )

    def _windowed(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Encoder windows of `samples` every `hop_samples`, each giving its first `keep_tokens` ids."""
        win = self.recipe["encode_window"]
        spt = self.recipe["samples_per_token"]
        segments, owners = [], []
        for i, clip in enumerate(clips):
            n = clip.shape[-1]
            for start in range(0, n, win["hop_samples"]):
                segments.append(clip[:, start : start + min(win["samples"], n - start)])
                owners.append(i)
        ids = by_length(segments, lambda w: self.run("encoder", w))
        out = []
        for i, clip in enumerate(clips):
            parts = [ids[j][: win["keep_tokens"]] for j in range(len(segments)) if owners[j] == i]
            out.append(np.concatenate(parts)[: clip.shape[-1] // spt])
        return out

    def _depth(self, n: Any) -> int | None:
        total = self.recipe.get("num_quantizers")
        if n is None:
            return None
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= int(n) <= total:
            raise InputError(f"num_quantizers must be an int in [1, {total}] (the first N codebooks); got {n!r}")
        return int(n)

    # -- decode ------------------------------------------------------------------------------------
    def decode(self, tokens: Any, **options: Any) -> np.ndarray:
        r = self.recipe
        dec = r["decode"]
        self.fixed_options(options)
        self.reject_unknown(options, ("num_quantizers",) if r.get("depth_option") else (), "decode")
        ids, frames, samples = self._decodable(tokens, self._depth(options.get("num_quantizers")))
        per = dec["samples_per_token"]
        keep = [f * per for f in frames]
        if dec["trim"] == "original_size" and samples is not None:
            keep = samples
            if len(keep) != ids.shape[0] or min(keep) < 1 or max(keep) > ids.shape[1] * per:
                raise InputError(f"Tokens.original_size {keep} does not fit ids of {ids.shape[1]} frames")
        if dec.get("window"):
            return self._decode_windows(ids, frames, per)
        if dec["batching"] == "whole":
            audio = self._run_decoder(ids)
            out = audio[..., : max(keep)].copy()
            for b, n in enumerate(keep):
                out[b, :, n:] = 0.0
            return out
        out = None
        for count in sorted(set(frames)):
            rows = [b for b in range(ids.shape[0]) if frames[b] == count]
            audio = self._run_decoder(ids[rows, :count])
            if out is None:
                out = np.zeros((ids.shape[0], audio.shape[1], max(keep)), dtype=np.float32)
            for i, b in enumerate(rows):
                n = min(keep[b], audio.shape[-1])
                out[b, :, :n] = audio[i, :, :n]
        return out  # type: ignore[return-value]

    def _run_decoder(self, ids: np.ndarray) -> np.ndarray:
        """The decoder graph; the MOSS-style graph takes all codebooks plus a mask of the ones to sum."""
        if self.recipe["decode"].get("codebook_mask"):
            total = self.recipe["num_quantizers"]
            mask = (np.arange(total) < ids.shape[-1]).astype(np.float32)
            padded = np.zeros((*ids.shape[:-1], total), dtype=np.int64)
            padded[..., : ids.shape[-1]] = ids
            return self.run("decoder", padded, mask)
        return self.run("decoder", ids)

    def _decode_windows(self, ids: np.ndarray, frames: list[int], per: int) -> np.ndarray:
        win = self.recipe["decode"]["window"]
        plan = []  # (clip, first code, codes in the window, codes kept)
        for b, count in enumerate(frames):
            for start in range(0, count, win["keep"]):
                size = min(win["tokens"], count - start)
                plan.append((b, start, size, min(size, win["keep"])))
        out = np.zeros((ids.shape[0], 1, max(frames) * per), dtype=np.float32)
        for size in sorted({p[2] for p in plan}):
            group = [p for p in plan if p[2] == size]
            audio = self._run_decoder(np.stack([ids[b, start : start + size] for b, start, _, _ in group]))
            for row, (b, start, _, kept) in enumerate(group):
                out[b, :, start * per : (start + kept) * per] = audio[row, :, : kept * per]
        return out

    def _decodable(self, tokens: Any, depth: int | None) -> tuple[np.ndarray, list[int], list[int] | None]:
        r = self.recipe
        multi = bool(r.get("multi_codebook"))
        tk = self.tokens_of(tokens)
        if tk is not None:
            if tk.ids is None:
                raise InputError(f"these tokens hold no ids; {self.tok.family} decodes discrete ids only")
            ids, lengths, size = tk.ids, tk.lengths, tk.original_size
        else:
            ids, lengths, size = tokens, None, None
        sizes = (r["codebook_size"],) * (r["num_quantizers"] if multi else 1)
        ids = int_ids(ids, sizes)
        want = 3 if multi else 2
        if ids.ndim == want - 1:
            ids = ids[None]
        if ids.ndim != want:
            layout = "(B, T, Q) (or (T, Q))" if multi else "(B, T) (or (T,))"
            raise InputError(f"{self.tok.family} ids must be {layout}; got shape {tuple(ids.shape)}")
        if depth is not None:
            if depth > ids.shape[-1]:
                raise InputError(f"num_quantizers={depth} but the ids hold only {ids.shape[-1]} codebooks")
            ids = ids[..., :depth]
        if multi and not r["decode"].get("codebook_mask") and ids.shape[-1] != r["num_quantizers"]:
            raise UnsupportedError(
                f"the decoder graph sums all {r['num_quantizers']} codebooks; these ids hold {ids.shape[-1]}. Decode "
                "fewer codebooks with the PyTorch tokenizer."
            )
        batch, steps = ids.shape[:2]
        frames = [steps] * batch if lengths is None else [int(v) for v in np.asarray(lengths).reshape(-1)]
        if len(frames) != batch or min(frames) < 1 or max(frames) > steps:
            raise InputError(f"Tokens.lengths {frames} do not fit ids of shape {tuple(ids.shape)}")
        samples = None if size is None else [int(v) for v in np.asarray(size).reshape(-1)]
        return ids, frames, samples

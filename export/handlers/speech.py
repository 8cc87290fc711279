"""Speech tokenizers in onnxruntime: S3Tokenizer (recipe "speech_encoder", encoder-only, 30 s mel windows
merged without losing tokens) and TaDiCodec (recipe "speech_flow": BSQ ids, and a decoder that samples
mel frames from noise around the exported velocity steps, conditioned on the transcript's text ids).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from export.errors import InputError, UnsupportedError
from export.handlers.audio import audio_input, by_length, stack_ids
from export.handlers.base import Handler
from export.media import canonical, float_array, int_ids, rng_of
from export.sampler import sample, time_grid
from export.tokens import NumpyTokens


def mel_frames(front: dict[str, Any], samples: int) -> int:
    """Frames of the log-mel front end for a clip (zoo.layers.mel.LogMel.num_frames)."""
    frames = (samples + 2 * front["pad"] - front["n_fft"]) // front["hop_length"] + 1
    return frames - 1 if front["drop_last"] else frames


class SpeechEncoder(Handler):
    """Waveform -> ids (B, T') with lengths; clips longer than one window go through the mel graphs."""

    def encode(self, x: Any, lengths: Any = None, sample_rate: int | None = None, **options: Any) -> NumpyTokens:
        self.reject_unknown(options, (), "encode")
        r = self.recipe
        wave, counts = audio_input(self, x, lengths, sample_rate)
        for b, n in enumerate(counts):
            if n < r["min_samples"]:
                what = f"clip {b}" if len(counts) > 1 else "audio"
                raise InputError(
                    f"{what} has {n} samples; the log-mel front end needs at least {r['min_samples']} "
                    f"({1000 * r['min_samples'] / self.spec.sample_rate:.1f} ms at {self.spec.sample_rate} Hz). "
                    "Pass a longer clip or pad it with silence yourself."
                )
        clips = [wave[b, :, : counts[b]] for b in range(wave.shape[0])]
        long = [mel_frames(r["frontend"], n) > r["window_frames"] for n in counts]
        pieces: list[np.ndarray | None] = [None] * len(clips)
        short = [i for i in range(len(clips)) if not long[i]]
        for i, ids in zip(short, by_length([clips[i] for i in short], lambda w: self.run("encoder", w)), strict=True):
            pieces[i] = ids
        longs = [i for i in range(len(clips)) if long[i]]
        for i, ids in zip(longs, self._windowed([clips[i] for i in longs]), strict=True):
            pieces[i] = ids
        ids = stack_ids(pieces)  # type: ignore[arg-type]
        return self.tok.make_tokens(
            ids.astype(np.int64), grid=(int(ids.shape[1]),),
            lengths=np.asarray([p.shape[0] for p in pieces], dtype=np.int64),  # type: ignore[union-attr]
            original_size=np.asarray(counts, dtype=np.int64), meta=dict(r.get("meta") or {}),
        )

    def _tokens_of_frames(self, frames: int) -> int:
        for stride in self.recipe["strides"]:
            frames = (frames + 2 - 3) // stride + 1  # the Whisper stem's convs: kernel 3, padding 1
        return frames

    def _windowed(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """S3Tokenizer._encode_mels: windows of `window_frames` every `window_hop_frames`, each token taken
        from the window that owns it (half the overlap on each side)."""
        r = self.recipe
        window, hop, down = r["window_frames"], r["window_hop_frames"], r["downsample"]
        mels = [self.run("frontend", clip)[0] for clip in clips]  # (n_mels, F) each, every clip on its own
        plan = []  # (clip, start frame, frames)
        for i, mel in enumerate(mels):
            frames = mel.shape[-1]
            starts = [0] if frames <= window else [k * hop for k in range(math.ceil((frames - window) / hop) + 1)]
            plan += [(i, s, min(window, frames - s)) for s in starts]
        found: dict[int, np.ndarray] = {}
        for size in sorted({n for _, _, n in plan}):
            group = [j for j, p in enumerate(plan) if p[2] == size]
            for first in range(0, len(group), max(1, r["max_frames_per_pass"] // size)):
                part = group[first : first + max(1, r["max_frames_per_pass"] // size)]
                batch = np.stack([mels[plan[j][0]][:, plan[j][1] : plan[j][1] + size] for j in part])
                ids = self.run("mel_encoder", batch, np.full((len(part),), size, dtype=np.int64))
                for row, j in enumerate(part):
                    found[j] = ids[row, : self._tokens_of_frames(size)]
        half = (window - hop) // 2 // down
        out = []
        for i, mel in enumerate(mels):
            mine = [(plan[j][1] // down, found[j]) for j in range(len(plan)) if plan[j][0] == i]
            total = self._tokens_of_frames(mel.shape[-1])
            parts = []
            for k, (offset, ids) in enumerate(mine):
                first = 0 if k == 0 else offset + half
                last = total if k == len(mine) - 1 else mine[k + 1][0] + half
                parts.append(ids[first - offset : last - offset])
            out.append(np.concatenate(parts))
        return out


class SpeechFlow(Handler):
    """TaDiCodec: speech -> ids (B, n); ids + text ids (+ prompt) -> speech by flow sampling in numpy."""

    # -- encode ------------------------------------------------------------------------------------
    def encode(
        self,
        x: Any,
        lengths: Any = None,
        prompt: Any = None,
        pad: bool = False,
        sample_rate: int | None = None,
        **options: Any,
    ) -> NumpyTokens:
        self.reject_unknown(options, (), "encode")
        r = self.recipe
        wave, counts = audio_input(self, x, lengths, sample_rate)
        batch = wave.shape[0]
        prompt_mels = None if prompt is None else self._prompt_mels(prompt, batch)
        clips = [wave[b, :, : counts[b]] for b in range(batch)]
        if pad:
            spt = r["samples_per_token"]
            clips = [np.pad(c, ((0, 0), (0, -c.shape[-1] % spt))) for c in clips]
        lead = 0 if prompt_mels is None else prompt_mels.shape[1]
        pad_front, factor = r["frontend"]["pad"], r["factor"]
        for i, c in enumerate(clips):
            if c.shape[-1] <= pad_front or mel_frames(r["frontend"], c.shape[-1]) + lead < factor:
                raise InputError(
                    f"audio too short: clip {i} has {counts[i]} samples; tadicodec needs at least "
                    f"{r['samples_per_token']} ({1000 * r['samples_per_token'] / self.spec.sample_rate:.0f} ms at "
                    f"{self.spec.sample_rate} Hz, {factor} mel frames = one id). Pad it with silence or pass pad=True."
                )
        if prompt_mels is None:
            pieces = by_length(clips, lambda w: self.run("encoder", w))
        else:
            mels = [np.concatenate([prompt_mels[min(b, prompt_mels.shape[0] - 1)], self.run("mel", c[None])[0]])
                    for b, c in enumerate(clips)]
            pieces = by_length([m.T for m in mels], lambda m: self.run("mel_encoder", np.swapaxes(m, 1, 2)))
        ids = stack_ids(pieces)
        extras = {} if prompt_mels is None else {"prompt_frames": np.full((batch,), lead, dtype=np.int64)}
        meta = {**(r.get("meta") or {}), "padded": bool(pad)}
        return self.tok.make_tokens(
            ids.astype(np.int64), grid=(int(ids.shape[1]),), lengths=np.asarray([p.shape[0] for p in pieces]),
            original_size=np.asarray(counts, dtype=np.int64), extras=extras, meta=meta,
        )

    def _prompt_mels(self, prompt: Any, batch: int) -> np.ndarray:
        wave = canonical(prompt, "audio", self.spec.channels)
        if wave.shape[0] not in (1, batch):
            raise InputError(f"prompt has {wave.shape[0]} clips for {batch} items; pass one clip or one per item")
        if wave.shape[-1] <= self.recipe["frontend"]["pad"]:
            raise InputError(
                f"prompt has {wave.shape[-1]} samples; its mel needs more than {self.recipe['frontend']['pad']} "
                "(reflect padding)"
            )
        return self.run("mel", wave)

    # -- decode ------------------------------------------------------------------------------------
    def decode(
        self,
        tokens: Any,
        text_ids: Any = None,
        prompt: Any = None,
        prompt_mel: Any = None,
        noise: Any = None,
        rng: Any = None,
        steps: int | None = None,
        **options: Any,
    ) -> np.ndarray:
        if options.get("text") is not None:
            raise UnsupportedError(
                "text= needs the published text tokenizer, which the onnxruntime tokenizer does not load; pass "
                "text_ids= (e.g. from the PyTorch tokenizer's tokenize_text(text))"
            )
        options.pop("text", None)
        self.reject_unknown(options, ("cfg_scale", "rescale", "schedule", "solver", "cfg_interval"), "decode")
        r, flow = self.recipe, self.recipe["flow"]
        ids, codes, samples, recorded = self._read_tokens(tokens)
        batch, factor, n_mels = ids.shape[0], r["factor"], r["n_mels"]
        texts = self._text_rows(text_ids, batch)
        prompts = self._decode_prompts(prompt, prompt_mel, batch, recorded)
        frames = [factor * codes[b] - (0 if prompts is None else prompts[b].shape[0]) for b in range(batch)]
        if min(frames) < 1:
            b = frames.index(min(frames))
            raise InputError(
                f"the prompt covers all {factor * codes[b]} frames the ids of item {b} describe; nothing is left to "
                "decode. Encode the target with encode(x, prompt=...) or pass a shorter prompt."
            )
        width = max(frames)
        if noise is None:
            noise = rng_of(rng).standard_normal((batch, width, n_mels), dtype=np.float32)
        else:
            noise = float_array(noise, "noise")
            if noise.ndim != 3 or noise.shape[0] != batch or noise.shape[1] < width or noise.shape[2] != n_mels:
                raise InputError(
                    f"decoder noise must be (B, frames, n_mels) = ({batch}, {width}, {n_mels}) (frames: {factor} per "
                    f"id, less the prompt's); got {tuple(noise.shape)}"
                )
        scale = float(options["cfg_scale"]) if options.get("cfg_scale") is not None else float(flow["cfg_scale"])
        weight = float(options["rescale"]) if options.get("rescale") is not None else float(flow["rescale"])
        times = time_grid(int(steps or flow["steps"]), options.get("schedule") or flow["schedule"])
        solver = options.get("solver") or flow["solver"]
        mel = np.zeros((batch, width, n_mels), dtype=np.float32)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for b in range(batch):
            groups.setdefault((codes[b], len(texts[b]), 0 if prompts is None else prompts[b].shape[0]), []).append(b)
        for (count, _, _), rows in groups.items():
            cond = self.run("condition", ids[rows, :count])
            txt = np.asarray([texts[b] for b in rows], dtype=np.int64)
            lead = (np.stack([prompts[b] for b in rows]) if prompts is not None
                    else np.zeros((len(rows), 0, n_mels), dtype=np.float32))

            def v_cond(x: np.ndarray, t: np.ndarray, cond: np.ndarray = cond, txt: np.ndarray = txt,
                       lead: np.ndarray = lead) -> np.ndarray:
                return self.run("velocity", np.concatenate([lead, x], axis=1), t, cond, txt)[:, lead.shape[1]:]

            def v_uncond(x: np.ndarray, t: np.ndarray, lead: np.ndarray = lead) -> np.ndarray:
                return self.run("velocity_uncond", np.concatenate([lead, x], axis=1), t)[:, lead.shape[1]:]

            out = sample(v_cond, noise[rows, : frames[rows[0]]], times, solver, cfg_scale=scale, rescale=weight,
                         uncond=v_uncond if scale > 0 else None, cfg_interval=options.get("cfg_interval"))
            mel[rows, : out.shape[1]] = out
        hop = r["hop_length"]
        keep = [f * hop for f in frames]
        if samples is not None:
            keep = [min(k, s) for k, s in zip(keep, samples, strict=True)]
        audio = np.zeros((batch, 1, max(keep)), dtype=np.float32)
        for count in sorted(set(frames)):
            rows = [b for b in range(batch) if frames[b] == count]
            wave = self.run("vocoder", mel[rows, :count])
            for i, b in enumerate(rows):
                audio[b, :, : keep[b]] = wave[i, :, : keep[b]]
        return audio

    def _read_tokens(self, tokens: Any) -> tuple[np.ndarray, list[int], list[int] | None, list[int] | None]:
        samples = recorded = lengths = None
        tk = self.tokens_of(tokens)
        if tk is not None:
            if tk.ids is None:
                raise InputError("these tokens hold no ids; tadicodec decodes ids (B, n) made by its encode()")
            ids, lengths = tk.ids, tk.lengths
            if tk.original_size is not None:
                samples = [int(s) for s in np.asarray(tk.original_size).reshape(-1)]
            if "prompt_frames" in tk.extras:
                recorded = [int(p) for p in np.asarray(tk.extras["prompt_frames"]).reshape(-1)]
        else:
            ids = tokens
        ids = int_ids(ids, (2 ** self.recipe["bits"],))
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2:
            raise InputError(f"tadicodec ids must be (B, n) (or (n,)); got shape {tuple(ids.shape)}")
        batch, width = ids.shape
        codes = [width] * batch if lengths is None else [int(c) for c in np.asarray(lengths).reshape(-1)]
        if len(codes) != batch or min(codes) < 1 or max(codes) > width:
            raise InputError(f"Tokens.lengths {codes} do not fit ids of shape {tuple(ids.shape)}")
        for name, values in (("original_size", samples), ("prompt_frames", recorded)):
            if values is not None and len(values) != batch:
                raise InputError(f"Tokens.{name} has {len(values)} entries for {batch} items")
        return ids, codes, samples, recorded

    def _text_rows(self, text_ids: Any, batch: int) -> list[list[int]]:
        if text_ids is None:
            raise InputError(
                "tadicodec decodes with the transcript: pass text_ids= (token ids of the published text tokenizer, "
                "(B, Lt) or (Lt,)). With a prompt, the transcript is prompt text + target text."
            )
        if isinstance(text_ids, Sequence) and text_ids and all(isinstance(v, int) for v in text_ids):
            rows = [list(text_ids)]
        elif isinstance(text_ids, Sequence) and not isinstance(text_ids, str):
            rows = [np.asarray(row).reshape(-1).tolist() for row in text_ids]
        else:
            arr = np.asarray(text_ids.detach().cpu() if hasattr(text_ids, "detach") else text_ids)
            if not np.issubdtype(arr.dtype, np.integer) or arr.ndim not in (1, 2):
                raise InputError(
                    f"text_ids must be integer token ids (B, Lt) or (Lt,); got {tuple(arr.shape)} of {arr.dtype}"
                )
            rows = [row.tolist() for row in (arr[None] if arr.ndim == 1 else arr)]
        if len(rows) == 1 and batch > 1:
            rows = rows * batch
        if len(rows) != batch:
            raise InputError(f"got {len(rows)} transcripts for {batch} token sequences; give one per item (or one)")
        vocab = self.recipe["text_vocab_size"]
        for i, row in enumerate(rows):
            if not row:
                raise InputError(f"transcript {i} is empty; tadicodec's decoder needs at least one text token")
            if not all(isinstance(v, int) for v in row) or min(row) < 0 or max(row) >= vocab:
                raise InputError(f"text ids of item {i} must be integers in [0, {vocab - 1}]; got {row[:8]}...")
        return rows

    def _decode_prompts(self, prompt: Any, prompt_mel: Any, batch: int, recorded: list[int] | None) -> list | None:
        if prompt is not None and prompt_mel is not None:
            raise InputError("pass prompt= (speech) or prompt_mel= (normalised mel frames), not both")
        n_mels = self.recipe["n_mels"]
        if prompt is not None:
            mels = self._prompt_mels(prompt, batch)
        elif prompt_mel is not None:
            mels = float_array(prompt_mel, "prompt_mel")
            if mels.ndim == 2:
                mels = mels[None]
            if mels.ndim != 3 or mels.shape[-1] != n_mels or mels.shape[0] not in (1, batch):
                raise InputError(
                    f"prompt_mel must be normalised mel frames (1 or {batch}, P, {n_mels}); got {tuple(mels.shape)}"
                )
        else:
            if recorded is not None and max(recorded) > 0:
                raise InputError(
                    f"these tokens were encoded after a prompt of {recorded[0]} mel frames (encode(x, prompt=...)); "
                    "pass the same prompt= to decode"
                )
            return None
        rows = [mels[min(b, mels.shape[0] - 1)] for b in range(batch)]
        if recorded is not None:
            for b in range(batch):
                if rows[b].shape[0] != recorded[b]:
                    raise InputError(
                        f"the prompt has {rows[b].shape[0]} mel frames but item {b} was encoded after {recorded[b]}; "
                        "pass the prompt the tokens were encoded with"
                    )
        return rows

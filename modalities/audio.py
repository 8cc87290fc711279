"""Audio in and out: files and arrays to canonical (B, C, N) float32 at the model's rate, and back.

libsndfile (soundfile) reads and writes WAV/FLAC/OGG/AIFF sample-exactly; FFmpeg (PyAV) covers the
compressed formats it lacks (MP3, M4A/AAC, Opus, the audio track of a video). `sample_rate=`
resamples on load with the polyphase filter of `modalities.resample`.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import soundfile as sf
import torch

from modalities._common import (
    PathLike,
    Source,
    check_finite,
    decoding,
    describe,
    head_bytes,
    is_file_source,
    to_numpy,
)
from modalities.resample import resample
from registry.errors import InputError, MediaError

ChannelPolicy = Literal["mono", "stereo"] | int | None

SOUNDFILE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".aiff": ("AIFF", "PCM_16"),
    ".aif": ("AIFF", "PCM_16"),
}
"""Suffixes written with libsndfile: (format, default subtype)."""

FFMPEG_FORMATS = {
    ".mp3": ("mp3", "libmp3lame"),
    ".m4a": ("ipod", "aac"),
    ".aac": ("adts", "aac"),
    ".opus": ("opus", "libopus"),
}
"""Suffixes written with FFmpeg: (muxer, encoder)."""

_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_SOUNDFILE_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"FORM", b".snd", b"caff")
_MAX_CHANNELS = 64


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about an audio stream."""

    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str
    codec: str


# --------------------------------------------------------------------------------------------- arrays


def to_canonical(x: Any, *, channels_first: bool | None = None) -> torch.Tensor:
    """An array of samples to (1, C, N) float32.

    1-D is mono; 2-D is (C, N) or (N, C): when `channels_first` is None the short axis (at most 64
    long) is taken as channels. 3-D must be (B, C, N). Integers are scaled to [-1, 1) by their
    dtype (int16 / 32768, int32 / 2**31, uint8 centred on 128); floats are taken as they are.
    """
    arr = to_numpy(x, "audio array")
    shape = tuple(arr.shape)
    if arr.dtype == np.uint8:
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64) / float(2 ** (8 * arr.dtype.itemsize - 1))
    check_finite(arr, f"audio array of shape {shape}")
    if arr.ndim == 1:
        arr = arr[None, None]
    elif arr.ndim == 2:
        if channels_first is None:
            c0, c1 = arr.shape
            if c0 <= _MAX_CHANNELS < c1 or (c0 < c1 and c0 <= _MAX_CHANNELS):
                channels_first = True
            elif c1 <= _MAX_CHANNELS < c0 or (c1 < c0 and c1 <= _MAX_CHANNELS):
                channels_first = False
            else:
                raise InputError(
                    f"audio array of shape {shape}: cannot tell channels from samples (neither axis "
                    f"is a plausible channel count <= {_MAX_CHANNELS} shorter than the other); "
                    "pass channels_first=True for (C, N) or False for (N, C)."
                )
        arr = (arr if channels_first else arr.T)[None]
    elif arr.ndim != 3:
        raise InputError(f"audio array of shape {shape}: expected (N,), (C, N), (N, C) or (B, C, N).")
    if arr.shape[1] > _MAX_CHANNELS:
        raise InputError(
            f"audio array of shape {shape} has {arr.shape[1]} channels; expected at most "
            f"{_MAX_CHANNELS}. Is it (N, C) rather than (C, N)? Pass channels_first=False."
        )
    if arr.shape[-1] == 0:
        raise InputError(f"audio array of shape {shape} holds no samples.")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def apply_channels(x: torch.Tensor, policy: ChannelPolicy, what: str = "audio") -> torch.Tensor:
    """Mono/stereo policy on (..., C, N): 'mono' averages, 'stereo' duplicates mono and keeps stereo."""
    c = x.shape[-2]
    if policy is None:
        return x
    target = {"mono": 1, "stereo": 2}.get(policy, policy) if isinstance(policy, str) else policy
    if not isinstance(target, int) or target < 1:
        raise InputError(f"channels must be None, 'mono', 'stereo' or a positive int, got {policy!r}.")
    if target == c:
        return x
    if target == 1:
        return x.mean(dim=-2, keepdim=True)
    if c == 1:
        return x.expand(*x.shape[:-2], target, x.shape[-1]).contiguous()
    raise InputError(
        f"{what} has {c} channels and {target} were asked for; only mono->many and many->mono are "
        "unambiguous. Use channels='mono', or pick channels yourself (e.g. x[:, [0, 1]])."
    )


# --------------------------------------------------------------------------------------------- reading


def _wav_truncation(src: Source, head: bytes) -> str | None:
    """A message when a WAV's data chunk claims more bytes than the file has (libsndfile reads on)."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    if isinstance(src, bytes | bytearray):
        data, size = bytes(src[: 1 << 16]), len(src)
    elif isinstance(src, io.IOBase):
        return None
    else:
        size = os.path.getsize(src)
        with open(src, "rb") as fh:
            data = fh.read(1 << 16)
    pos = 12
    while pos + 8 <= len(data):
        cid, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"data":
            if length in (0, 0xFFFFFFFF):
                return None  # streaming writers leave the size open
            have = size - (pos + 8)
            if have < length:
                return f"its data chunk declares {length} bytes but only {have} are present (truncated file)"
            return None
        pos += 8 + length + (length & 1)
    return None


def _read_soundfile(src: Source, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    target = io.BytesIO(bytes(src)) if isinstance(src, bytes | bytearray) else src
    with sf.SoundFile(target) as fh:
        rate = fh.samplerate
        start = min(int(round(offset * rate)), fh.frames)
        count = -1 if duration is None else int(round(duration * rate))
        if start:
            fh.seek(start)
        data = fh.read(frames=count, dtype="float32", always_2d=True)
        expected = fh.frames - start if count < 0 else min(count, fh.frames - start)
        if fh.format == "FLAC" and data.shape[0] < expected:
            raise MediaError(
                f"cannot decode audio {describe(src)}: decoded {data.shape[0]} of {expected} samples; "
                "the FLAC stream is truncated."
            )
    return data.T, rate


def _read_ffmpeg(src: Source, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    target = io.BytesIO(bytes(src)) if isinstance(src, bytes | bytearray) else src
    with av.open(target) as container:
        if not container.streams.audio:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise MediaError(
                f"{describe(src)} has no audio stream (streams: {kinds}); "
                "use modalities.image / modalities.video for pictures."
            )
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate)
        start = int(round(offset * rate))
        stop = None if duration is None else start + int(round(duration * rate))
        converter = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        seen = 0
        for frame in container.decode(stream):
            for out in converter.resample(frame):
                block = out.to_ndarray()
                lo, hi = seen, seen + block.shape[1]
                seen = hi
                if hi <= start:
                    continue
                chunks.append(block[:, max(0, start - lo) : None if stop is None else max(0, stop - lo)])
            if stop is not None and seen >= stop:
                break
    if not chunks:
        return np.zeros((max(1, stream.codec_context.channels or 1), 0), np.float32), rate
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


def _read_file(src: Source, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    head = head_bytes(src, 64)
    if not head:
        raise MediaError(f"audio file {describe(src)} is empty (0 bytes).")
    if head.startswith(_SOUNDFILE_MAGIC):
        problem = _wav_truncation(src, head)
        if problem:
            raise MediaError(f"cannot decode audio {describe(src)}: {problem}; re-export or re-download it.")
        try:
            with decoding(src, "audio"):
                return _read_soundfile(src, offset, duration)
        except MediaError as first:
            if head[:4] not in (b"OggS", b"RIFF"):
                raise
            soundfile_error = first  # Ogg/RIFF variants libsndfile lacks (Theora+Vorbis, compressed WAV)
            if isinstance(src, io.IOBase):
                src.seek(0)
    else:
        soundfile_error = None
    try:
        with decoding(src, "audio"):
            return _read_ffmpeg(src, offset, duration)
    except MediaError:
        if soundfile_error is not None:
            raise soundfile_error from None
        raise


def load_with_rate(
    src: Source | Any,
    *,
    sample_rate: int | None = None,
    channels: ChannelPolicy = None,
    offset: float = 0.0,
    duration: float | None = None,
    source_rate: int | None = None,
    channels_first: bool | None = None,
) -> tuple[torch.Tensor, int]:
    """Like `load`, also returning the sample rate of the result."""
    if offset < 0 or (duration is not None and duration <= 0):
        raise InputError(
            f"offset must be >= 0 and duration > 0 seconds, got offset={offset}, duration={duration}."
        )
    if is_file_source(src):
        samples, rate = _read_file(src, offset, duration)
        what = f"audio {describe(src)}"
        if samples.shape[-1] == 0:
            extra = f" after offset {offset}s" if offset else ""
            raise MediaError(f"{what} contains no audio samples{extra}; expected at least one sample.")
        x = torch.from_numpy(np.ascontiguousarray(samples))[None]
    else:
        if source_rate is None:
            raise InputError("loading audio from an array needs source_rate= (its sample rate in Hz).")
        what = "audio array"
        x = to_canonical(src, channels_first=channels_first)
        rate = int(source_rate)
        start = int(round(offset * rate))
        stop = None if duration is None else start + int(round(duration * rate))
        x = x[..., start:stop]
        if x.shape[-1] == 0:
            raise InputError(f"{what} holds no samples after offset {offset}s.")
    x = apply_channels(x, channels, what)
    if sample_rate is not None and int(sample_rate) != rate:
        x = resample(x, rate, int(sample_rate))
        rate = int(sample_rate)
    return x.float().contiguous(), rate


def load(
    src: Source | Any,
    *,
    sample_rate: int | None = None,
    channels: ChannelPolicy = None,
    offset: float = 0.0,
    duration: float | None = None,
    source_rate: int | None = None,
    channels_first: bool | None = None,
) -> torch.Tensor:
    """Read audio (WAV/FLAC/OGG/AIFF/MP3/M4A/Opus, or a video's audio track) as (1, C, N) float32.

    `sample_rate` resamples to the model's rate; `channels` is None (keep), 'mono' or 'stereo';
    `offset`/`duration` (seconds) read a window. Arrays need `source_rate` (see `to_canonical`).
    """
    return load_with_rate(
        src,
        sample_rate=sample_rate,
        channels=channels,
        offset=offset,
        duration=duration,
        source_rate=source_rate,
        channels_first=channels_first,
    )[0]


def info(src: Source) -> AudioInfo:
    """Sample rate, channels and length without decoding (decoded to count when the header does not say)."""
    head = head_bytes(src, 64)
    if not head:
        raise MediaError(f"audio file {describe(src)} is empty (0 bytes).")
    if head.startswith(_SOUNDFILE_MAGIC):
        try:
            target = io.BytesIO(bytes(src)) if isinstance(src, bytes | bytearray) else src
            i = sf.info(target)
            return AudioInfo(
                sample_rate=i.samplerate,
                channels=i.channels,
                frames=i.frames,
                duration=i.frames / i.samplerate,
                format=i.format,
                codec=i.subtype,
            )
        except (sf.LibsndfileError, RuntimeError, TypeError):
            if isinstance(src, io.IOBase):
                src.seek(0)
    with decoding(src, "audio"):
        target = io.BytesIO(bytes(src)) if isinstance(src, bytes | bytearray) else src
        with av.open(target) as container:
            if not container.streams.audio:
                raise MediaError(f"{describe(src)} has no audio stream.")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate)
            frames = sum(f.samples for f in container.decode(stream))
            return AudioInfo(
                sample_rate=rate,
                channels=int(stream.codec_context.channels),
                frames=frames,
                duration=frames / rate,
                format=container.format.name,
                codec=stream.codec_context.name,
            )


# --------------------------------------------------------------------------------------------- writing


def _samples_to_write(x: Any) -> np.ndarray:
    """(C, N) float32 in [-1, 1] from (1, C, N) / (C, N) / (N,)."""
    t = x.detach().cpu().float() if isinstance(x, torch.Tensor) else torch.as_tensor(to_numpy(x, "audio"))
    shape = tuple(t.shape)
    if t.ndim == 3:
        if t.shape[0] != 1:
            raise InputError(
                f"save writes one clip, got a batch of {t.shape[0]} (shape {shape}); save x[i:i+1] "
                "for each i (trim the padding with its length first)."
            )
        t = t[0]
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] > _MAX_CHANNELS:
        raise InputError(f"expected canonical audio (1, C, N) or (C, N), got shape {shape}.")
    if t.shape[-1] == 0:
        raise InputError("cannot save audio with 0 samples.")
    check_finite(t, "audio to save")
    return t.float().clamp(-1.0, 1.0).numpy()


def _write_ffmpeg(
    samples: np.ndarray, path: Path, rate: int, muxer: str, codec: str, bitrate: int | None
) -> None:
    if codec == "libopus" and rate not in _OPUS_RATES:
        samples = resample(samples, rate, 48000).astype(np.float32)
        rate = 48000
    channels = samples.shape[0]
    if channels > 2:
        raise InputError(
            f"{path.suffix} export supports mono or stereo, got {channels} channels; "
            "downmix with channels='mono' or save as .wav/.flac."
        )
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), mode="w", format=muxer) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if bitrate:
            stream.bit_rate = int(bitrate)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def save(
    x: Any, path: PathLike, sample_rate: int, *, subtype: str | None = None, bitrate: int | None = None
) -> Path:
    """Write canonical audio; the format follows the suffix.

    .wav/.flac/.aiff (PCM_16 by default; `subtype` 'PCM_24', 'FLOAT', ...) and .ogg (Vorbis) go through
    libsndfile; .mp3/.m4a/.aac/.opus through FFmpeg (`bitrate` in bit/s; Opus resamples to 48 kHz
    when the rate is not one Opus supports). Samples are clipped to [-1, 1].
    """
    out = Path(os.fspath(path))
    suffix = out.suffix.lower()
    if int(sample_rate) <= 0:
        raise InputError(f"sample_rate must be a positive number of Hz, got {sample_rate}.")
    if suffix not in SOUNDFILE_FORMATS and suffix not in FFMPEG_FORMATS:
        known = ", ".join(sorted({*SOUNDFILE_FORMATS, *FFMPEG_FORMATS}))
        raise InputError(
            f"cannot save audio to {describe(path)}: unknown suffix {suffix!r}; use one of {known}."
        )
    if not out.parent.is_dir():
        raise MediaError(f"cannot save audio to {describe(path)}: folder {str(out.parent)!r} does not exist.")
    samples = _samples_to_write(x)
    try:
        if suffix in SOUNDFILE_FORMATS:
            fmt, default = SOUNDFILE_FORMATS[suffix]
            chosen = (subtype or default).upper()
            if not sf.check_format(fmt, chosen):
                raise InputError(
                    f"subtype {chosen!r} is not valid for {suffix}; valid: "
                    f"{', '.join(sorted(sf.available_subtypes(fmt)))}."
                )
            sf.write(out, samples.T, int(sample_rate), format=fmt, subtype=chosen)
        else:
            muxer, codec = FFMPEG_FORMATS[suffix]
            _write_ffmpeg(samples, out, int(sample_rate), muxer, codec, bitrate)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - libsndfile and FFmpeg raise unrelated types
        raise MediaError(f"cannot write audio {describe(path)}: {err}.") from err
    return out

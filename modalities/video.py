"""Video in and out with PyAV: MP4/WebM/MKV/MOV/AVI/GIF to canonical (B, 3, T, H, W) float32 in [-1, 1].

Frames are chosen while decoding, so a long video sampled at a low rate never sits whole in memory:
`fps=` picks, for each target time k / fps, the decoded frame nearest to it (by presentation time,
so variable-frame-rate files sample correctly; a tie goes to the earlier frame); `stride=` keeps
every n-th decoded frame.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from modalities._common import (
    PathLike,
    Source,
    check_finite,
    decoding,
    describe,
    head_bytes,
    is_file_source,
    scale_from_range,
    to_numpy,
)
from modalities.geometry import Padding
from registry.errors import InputError, MediaError

DEFAULT_MAX_PIXELS = 1 << 25
"""Per-frame guard: 33 megapixels (above 8K UHD); raise per call with ``max_pixels=``."""

_EPS = 1e-6

CODECS = {
    # suffix: (muxer, lossy codec and pixel format, lossless codec and pixel format)
    ".mp4": ("mp4", ("libx264", "yuv420p"), ("libx264rgb", "rgb24")),
    ".mkv": ("matroska", ("libx264", "yuv420p"), ("ffv1", "bgr0")),
    ".webm": ("webm", ("libvpx-vp9", "yuv420p"), ("libvpx-vp9", "gbrp")),
    ".mov": ("mov", ("libx264", "yuv420p"), ("libx264rgb", "rgb24")),
    ".gif": ("gif", ("pillow", "adaptive palette"), None),
}
"""What `save` writes for each suffix."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the first video stream (frames may be an estimate)."""

    width: int
    height: int
    fps: float
    frames: int
    duration: float
    codec: str
    has_audio: bool


def _open(src: Source) -> av.container.InputContainer:
    target = io.BytesIO(bytes(src)) if isinstance(src, bytes | bytearray) else src
    return av.open(target if not isinstance(target, os.PathLike) else os.fspath(target))


def _video_stream(container: av.container.InputContainer, src: object) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise MediaError(
            f"{describe(src)} has no video stream (streams: {kinds}); "
            "use modalities.audio.load for audio-only files."
        )
    return container.streams.video[0]


def _native_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    return float(rate) if rate else 25.0


def info(src: Source) -> VideoInfo:
    """Size, frame rate, frame count and duration from the container header."""
    _check_head(src)
    with decoding(src, "video"), _open(src) as container:
        stream = _video_stream(container, src)
        fps = _native_fps(stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames = int(stream.frames) or int(round(duration * fps))
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps,
            frames=frames,
            duration=duration or frames / fps,
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
        )


def _check_head(src: Source) -> None:
    if is_file_source(src) and not head_bytes(src, 16):
        raise MediaError(f"video file {describe(src)} is empty (0 bytes).")


def _timed_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, native_fps: float
) -> Iterator[tuple[float, av.VideoFrame]]:
    """(seconds from the first frame, frame) pairs in presentation order."""
    first: float | None = None
    for index, frame in enumerate(container.decode(stream)):
        t = frame.time if frame.time is not None else index / native_fps
        if first is None:
            first = t
        yield t - first, frame


def _select(
    frames: Iterator[tuple[float, av.VideoFrame]],
    *,
    fps: float | None,
    stride: int,
    start: float,
    stop: float,
    frame_period: float,
) -> Iterator[av.VideoFrame]:
    """Frames kept by the sampling rule, in order (a frame repeats when `fps` exceeds the native rate)."""
    if fps is None:
        kept = 0
        for t, frame in frames:
            if t < start - _EPS:
                continue
            if t >= stop - _EPS:
                return
            if kept % stride == 0:
                yield frame
            kept += 1
        return
    step = 1.0 / fps
    target = start
    prev: tuple[float, av.VideoFrame] | None = None
    for t, frame in frames:
        while target < stop - _EPS and target <= t + _EPS:
            if prev is None or (t - target) < (target - prev[0]) - _EPS:  # a tie goes to the earlier frame
                yield frame
            else:
                yield prev[1]
            target += step
        if target >= stop - _EPS:
            return
        prev = (t, frame)
    if prev is not None:
        end = min(stop, prev[0] + frame_period)
        while target < end - _EPS:
            yield prev[1]
            target += step


def load_with_fps(
    src: Source | Any,
    *,
    fps: float | None = None,
    stride: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
    max_frames: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[torch.Tensor, float]:
    """Like `load`, also returning the frame rate of the result (for arrays: `fps` as given, else 0)."""
    if fps is not None and stride is not None:
        raise InputError("pass either fps= (resample in time) or stride= (keep every n-th frame), not both.")
    if fps is not None and fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}.")
    if stride is not None and stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}.")
    if start < 0 or (duration is not None and duration <= 0):
        raise InputError(
            f"start must be >= 0 and duration > 0 seconds, got start={start}, duration={duration}."
        )
    if not is_file_source(src):
        return to_canonical(src), float(fps or 0.0)  # an array carries no rate: echo the one given
    _check_head(src)
    frames: list[np.ndarray] = []
    with decoding(src, "video"), _open(src) as container:
        stream = _video_stream(container, src)
        stream.thread_type = "AUTO"
        w, h = stream.codec_context.width, stream.codec_context.height
        if w * h > max_pixels:
            raise MediaError(
                f"video {describe(src)} has {w}x{h} frames, above max_pixels={max_pixels}; "
                "pass a larger max_pixels= if you mean it."
            )
        native = _native_fps(stream)
        stop = float("inf") if duration is None else start + duration
        chosen = _select(
            _timed_frames(container, stream, native),
            fps=fps,
            stride=stride or 1,
            start=start,
            stop=stop,
            frame_period=1.0 / native,
        )
        for frame in chosen:
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        where = f" after {start}s" if start else ""
        raise MediaError(
            f"video {describe(src)} contains no frames{where}; expected at least one decodable frame."
        )
    out_fps = fps if fps is not None else native / (stride or 1)
    return _stack(frames), float(out_fps)


def load(
    src: Source | Any,
    *,
    fps: float | None = None,
    stride: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
    max_frames: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Decode a video to (1, 3, T, H, W) float32 in [-1, 1], optionally resampled in time.

    `fps`: target frame rate (nearest frame per target time); `stride`: keep every n-th frame;
    `start`/`duration`: a window in seconds; `max_frames`: stop after that many frames. Arrays go
    through `to_canonical`.
    """
    return load_with_fps(
        src,
        fps=fps,
        stride=stride,
        start=start,
        duration=duration,
        max_frames=max_frames,
        max_pixels=max_pixels,
    )[0]


def _stack(frames: list[np.ndarray]) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames to (1, 3, T, H, W) float32 in [-1, 1]."""
    arr = torch.from_numpy(np.stack(frames))
    return (arr.permute(3, 0, 1, 2).float() / 127.5 - 1.0)[None].contiguous()


def to_canonical(x: Any, *, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Frames to (B, 3, T, H, W) float32 in [-1, 1].

    numpy: (T, H, W, C) with C in {1, 3}; torch: (T, C, H, W) or (B, C, T, H, W). uint8 scales by 255;
    floats are taken as [0, 1] unless `value_range` says otherwise.
    """
    is_torch = isinstance(x, torch.Tensor)
    arr = to_numpy(x, "video array")
    what = f"video {'tensor' if is_torch else 'array'} of shape {tuple(arr.shape)}"
    if is_torch:
        if arr.ndim == 4:
            arr = arr.transpose(1, 0, 2, 3)[None]
        if arr.ndim != 5:
            raise InputError(f"{what}: expected (T, C, H, W) or (B, C, T, H, W).")
    else:
        if arr.ndim != 4:
            raise InputError(f"{what}: expected (T, H, W, C).")
        arr = arr.transpose(3, 0, 1, 2)[None]
    if arr.shape[2] == 0:
        raise InputError(f"{what}: the video has no frames (T = 0).")
    if arr.shape[1] not in (1, 3):
        raise InputError(f"{what}: expected 1 or 3 channels, got {arr.shape[1]}.")
    if np.issubdtype(arr.dtype, np.floating):
        check_finite(arr, what)
        unit = scale_from_range(arr, value_range or (0.0, 1.0), what)
    elif arr.dtype == np.uint8:
        unit = arr.astype(np.float64) / 255.0
    else:
        raise InputError(f"{what}: expected uint8 or float frames, got {arr.dtype}.")
    if unit.shape[1] == 1:
        unit = np.repeat(unit, 3, axis=1)
    return (torch.from_numpy(np.ascontiguousarray(unit)) * 2.0 - 1.0).float()


# --------------------------------------------------------------------------------------------- writing


def _frames_to_write(x: Any, padding: Padding | None) -> np.ndarray:
    """(T, H, W, 3) uint8 from a canonical (1, 3, T, H, W) / (3, T, H, W) tensor."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(to_numpy(x, "video"))
    shape = tuple(t.shape)
    if t.ndim == 5:
        if t.shape[0] != 1:
            raise InputError(
                f"save writes one video, got a batch of {t.shape[0]} (shape {shape}); "
                "save x[i:i+1] for each i."
            )
        t = t[0]
    if t.ndim != 4 or t.shape[0] != 3:
        raise InputError(f"expected a canonical video (1, 3, T, H, W) or (3, T, H, W), got shape {shape}.")
    if t.shape[1] == 0:
        raise InputError("cannot save a video with no frames (T = 0).")
    t = t.double()
    check_finite(t, "video to save")
    if padding is not None:
        t = padding.crop(t)
    arr = torch.round((t.clamp(-1.0, 1.0) + 1.0) * 127.5).to(torch.uint8)
    return arr.permute(1, 2, 3, 0).contiguous().numpy()


def _even(frames: np.ndarray) -> np.ndarray:
    """Replicate the last row/column so 4:2:0 chroma subsampling gets even sides."""
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def save(
    x: Any,
    path: PathLike,
    fps: float,
    *,
    crf: int = 18,
    lossless: bool = False,
    padding: Padding | None = None,
) -> Path:
    """Encode a canonical video; the container follows the suffix (.mp4 .mkv .webm .mov .gif).

    Lossy: H.264 (VP9 for .webm) in 4:2:0 at `crf` (odd sides are padded by one replicated pixel).
    `lossless=True` stores RGB exactly (.mp4/.mov: H.264 RGB at qp 0; .mkv: FFV1; .webm: VP9 lossless).
    GIF is palette-based and never lossless. `padding` crops what `geometry.fit` added.
    """
    out = Path(os.fspath(path))
    suffix = out.suffix.lower()
    if suffix not in CODECS:
        raise InputError(
            f"cannot save video to {describe(path)}: unknown suffix {suffix!r}; use one of "
            f"{', '.join(sorted(CODECS))}."
        )
    muxer, lossy, exact = CODECS[suffix]
    if lossless and exact is None:
        raise InputError(
            f"{suffix} cannot store video losslessly; use .mkv, .mp4 or .webm with lossless=True."
        )
    if not fps or fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}.")
    if not out.parent.is_dir():
        raise MediaError(f"cannot save video to {describe(path)}: folder {str(out.parent)!r} does not exist.")
    codec, pix_fmt = exact if lossless and exact is not None else lossy
    frames = _frames_to_write(x, padding)
    if codec == "pillow":
        return _save_gif(frames, out, fps)
    if pix_fmt == "yuv420p":
        frames = _even(frames)
    rate = Fraction(str(float(fps))).limit_denominator(1001 * 1000)
    options = {
        "libx264": {"crf": str(crf), "preset": "medium"},
        "libx264rgb": {"qp": "0", "preset": "medium"},
        "libvpx-vp9": {"lossless": "1"} if lossless else {"crf": str(crf + 12), "b": "0"},
        "ffv1": {},
    }[codec]
    try:
        with av.open(str(out), mode="w", format=muxer) as container:
            stream = container.add_stream(codec, rate=rate, options=options)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = pix_fmt
            stream.codec_context.time_base = 1 / rate
            for i, arr in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                frame.pts = i
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    except Exception as err:  # noqa: BLE001 - FFmpeg raises many unrelated types
        raise MediaError(f"cannot write video {describe(path)} with {codec}: {err}.") from err
    return out


def _save_gif(frames: np.ndarray, out: Path, fps: float) -> Path:
    """Animated GIF through Pillow, whose per-frame adaptive palettes beat FFmpeg's fixed 3-3-2 one."""
    from PIL import Image

    images = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.MEDIANCUT) for f in frames]
    try:
        images[0].save(
            out,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            loop=0,
            duration=max(20, round(1000.0 / fps)),
            optimize=False,
        )
    except OSError as err:
        raise MediaError(f"cannot write video {describe(out)} as GIF: {err}.") from err
    return out


def frames_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(T, H, W, 3) uint8 from a canonical video, for plots and custom writers."""
    return _frames_to_write(x, None)

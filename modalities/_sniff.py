"""What a media file is, judged by its content: magic bytes first, a decoder probe when they are not enough.

Extensions lie (a `.mp4` holding only audio, a `.png` that is really a JPEG), and containers such as
MP4, Matroska, Ogg and animated GIF can hold either kind, so those are settled by asking FFmpeg what
streams the file has.
"""

from __future__ import annotations

import io
from typing import Literal

import av

from modalities._common import Source, describe, head_bytes, read_bytes
from registry.errors import MediaError

Kind = Literal["image", "video", "audio"]

_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"BM",
    b"II*\x00",  # TIFF little endian
    b"MM\x00*",  # TIFF big endian
)
_AUDIO_MAGIC = (b"fLaC", b"ID3", b".snd", b"caff", b"#!AMR")
_CONTAINER_MAGIC = (
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM
    b"OggS",
    b"GIF87a",
    b"GIF89a",
    b"FLV",
)


def sniff_bytes(head: bytes) -> str | None:
    """Kind from the first bytes alone: 'image', 'audio', 'container' (needs a probe) or None."""
    if head.startswith(_IMAGE_MAGIC):
        return "image"
    if head[:4] == b"RIFF" and len(head) >= 12:
        sub = head[8:12]
        if sub == b"WAVE":
            return "audio"
        if sub == b"WEBP":
            return "container" if b"ANIM" in head[12:64] or head[12:16] == b"VP8X" else "image"
        if sub == b"AVI ":
            return "container"
    if head[:4] in (b"RF64", b"BW64"):
        return "audio"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio"
    if head.startswith(_AUDIO_MAGIC):
        return "audio"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0:
        return "audio"  # MPEG audio frame sync (MP3 without an ID3 tag) or ADTS AAC
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "container"
    if head.startswith(_CONTAINER_MAGIC):
        return "container"
    return None


def _webp_is_animated(data: bytes) -> bool:
    return b"ANIM" in data[:4096] and data.count(b"ANMF") > 1


def _probe(src: Source) -> str | None:
    """Ask FFmpeg which streams the file has; a video stream with one frame only is an image."""
    data = read_bytes(src, "media")
    try:
        with av.open(io.BytesIO(data)) as container:
            videos = [s for s in container.streams.video if s.codec_context is not None]
            if videos:
                stream = videos[0]
                frames = stream.frames
                if frames == 0:
                    frames = sum(1 for _ in zip(range(2), container.decode(video=0), strict=False))
                if frames > 1 or stream.codec_context.name not in ("gif", "webp", "png", "mjpeg"):
                    return "video"
                return "image"
            if container.streams.audio:
                return "audio"
    except (av.FFmpegError, ValueError, UnicodeDecodeError, StopIteration):
        return None
    return None


def detect(path: Source) -> Kind:
    """'image', 'video' or 'audio' for a media file, judged by content rather than extension.

    Animated GIF/WebP count as video, single-frame ones as images; an MP4/Matroska/Ogg with a video
    stream is video, with only audio streams it is audio.
    """
    head = head_bytes(path, 64)
    if not head:
        raise MediaError(f"cannot detect media kind of {describe(path)}: the file is empty (0 bytes).")
    kind = sniff_bytes(head)
    if kind == "image":
        return "image"
    if kind == "audio":
        return "audio"
    if kind == "container" and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "video" if _webp_is_animated(read_bytes(path, "media")) else "image"
    probed = _probe(path)
    if probed is not None:
        return probed  # type: ignore[return-value]
    try:
        from PIL import Image

        with Image.open(io.BytesIO(read_bytes(path, "media"))) as im:
            im.verify()
        return "image"
    except Exception:  # noqa: BLE001 - any failure here means "not an image Pillow knows"
        pass
    if kind == "container":
        raise MediaError(
            f"{describe(path)} starts like a media container (first bytes {head[:12]!r}) but FFmpeg "
            "cannot read its streams: the file is corrupt or truncated."
        )
    raise MediaError(
        f"{describe(path)} is not a media file this package can read (first bytes {head[:12]!r}); "
        "expected an image (PNG/JPEG/WebP/BMP/TIFF/GIF), video (MP4/WebM/MKV/GIF) or audio "
        "(WAV/FLAC/OGG/MP3/M4A/Opus)."
    )

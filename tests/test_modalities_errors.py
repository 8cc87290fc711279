"""Bad input gets one of our errors naming the file and the problem, never a raw decoder exception."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from modalities import audio, detect, image, samples, video
from registry.errors import InputError, MediaError

CHELSEA = samples.path("chelsea.png")
SPEECH = samples.path("arctic_a0009.wav")
GUITAR = samples.path("guitar_em9.flac")
BUNNY = samples.path("bbb_clip.mp4")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header that claims a huge canvas, with almost no pixel data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _expect(exc: type[Exception], path: Path, *words: str):
    """Context manager: raises `exc`, and the message names the file and each of `words`."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            handled = self.ctx.__exit__(*args)
            message = str(self.info.value)
            assert path.name in message, message
            for word in words:
                assert word in message, message
            return handled

    return _Check()


# --------------------------------------------------------------------------------------------- images


def test_truncated_png(tmp_path):
    data = CHELSEA.read_bytes()
    bad = _write(tmp_path / "half.png", data[: len(data) // 2])
    with _expect(MediaError, bad, "truncated"):
        image.load(bad)


def test_truncated_jpeg(tmp_path):
    bad = _write(tmp_path / "half.jpg", samples.path("coffee.jpg").read_bytes()[:20000])
    with _expect(MediaError, bad, "truncated"):
        image.load(bad)


def test_corrupt_and_non_media_images(tmp_path):
    corrupt = _write(tmp_path / "corrupt.png", CHELSEA.read_bytes()[:40] + bytes(range(256)) * 8)
    with _expect(MediaError, corrupt, "cannot"):
        image.load(corrupt)
    text = _write(tmp_path / "notes.png", b"a shopping list, not a picture\n" * 20)
    with _expect(MediaError, text, "not a known image format"):
        image.load(text)
    sound = _write(tmp_path / "speech.png", SPEECH.read_bytes())
    with _expect(MediaError, sound, "looks like audio"):
        image.load(sound)
    empty = _write(tmp_path / "empty.png", b"")
    with _expect(MediaError, empty, "empty"):
        image.load(empty)
    with _expect(MediaError, tmp_path / "missing.png", "does not exist"):
        image.load(tmp_path / "missing.png")


def test_one_pixel_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    with _expect(MediaError, tmp_path / "dot.png", "1x1", "min_side"):
        image.load(tmp_path / "dot.png")
    assert image.load(tmp_path / "dot.png", min_side=1).shape == (1, 3, 1, 1)
    with pytest.raises(InputError, match="at least 8 pixels"):
        image.load(np.zeros((1, 1, 3), np.uint8))


def test_decompression_bomb_guard(tmp_path):
    bomb = _write(tmp_path / "bomb.png", _png_header_only(100_000, 100_000))
    with _expect(MediaError, bomb, "decompression-bomb"):
        image.load(bomb)
    medium = _write(tmp_path / "medium.png", _png_header_only(9000, 9000))  # 81 Mpx: above our 67 Mpx default
    with _expect(MediaError, medium, "max_pixels"):
        image.load(medium)
    with _expect(MediaError, CHELSEA, "max_pixels", "135300"):
        image.load(CHELSEA, max_pixels=100_000)
    assert image.load(CHELSEA, max_pixels=135_300).shape == (1, 3, 300, 451)


def test_bad_image_arrays():
    with pytest.raises(InputError, match="NaN/Inf"):
        image.load(np.full((16, 16, 3), np.nan, np.float32))
    with pytest.raises(InputError, match="got 5"):
        image.load(np.zeros((16, 16, 5), np.uint8))
    with pytest.raises(InputError, match=r"\(C, H, W\)"):
        image.load(torch.zeros(16, 16))
    with pytest.raises(InputError, match="dtype"):
        image.load(np.zeros((16, 16, 3), dtype=object))


def test_bad_image_saves(tmp_path):
    x = image.load(CHELSEA)
    with pytest.raises(InputError, match="NaN/Inf"):
        image.save(torch.full_like(x, float("inf")), tmp_path / "inf.png")
    with pytest.raises(InputError, match="got shape"):
        image.save(torch.zeros(1, 2, 8, 8), tmp_path / "two.png")
    with pytest.raises(InputError, match="batch of 2"):
        image.save(torch.cat([x, x]), tmp_path / "two.png")
    with pytest.raises(InputError, match="unknown suffix"):
        image.save(x, tmp_path / "cat.xyz")
    with pytest.raises(MediaError, match="does not exist"):
        image.save(x, tmp_path / "no" / "such" / "cat.png")
    with pytest.raises(InputError, match="bit_depth=16"):
        image.save(x, tmp_path / "cat.jpg", bit_depth=16)


# --------------------------------------------------------------------------------------------- video


def test_truncated_and_non_media_video(tmp_path):
    data = BUNNY.read_bytes()
    half = _write(tmp_path / "half.mp4", data[: len(data) // 2])
    with _expect(MediaError, half, "corrupt, truncated"):
        video.load(half)
    with _expect(MediaError, half, "corrupt or truncated"):
        detect(half)
    text = _write(tmp_path / "notes.mp4", b"a shopping list, not a film\n" * 40)
    with _expect(MediaError, text, "cannot decode video"):
        video.load(text)
    empty = _write(tmp_path / "empty.mp4", b"")
    with _expect(MediaError, empty, "empty"):
        video.load(empty)


def test_video_without_frames(tmp_path):
    """A Matroska file whose video track holds no packets (only its audio track has data)."""
    path = tmp_path / "noframes.mkv"
    with av.open(str(path), "w") as container:
        v = container.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*a.encode(frame), *a.encode(None)]:
            container.mux(packet)
    with _expect(MediaError, path, "no frames"):
        video.load(path)
    with _expect(MediaError, SPEECH, "no video stream"):
        video.load(SPEECH)
    with _expect(MediaError, BUNNY, "no frames after 10.0s"):
        video.load(BUNNY, start=10.0)


def test_video_limits_and_bad_arrays(tmp_path):
    with _expect(MediaError, BUNNY, "max_pixels"):
        video.load(BUNNY, max_pixels=320 * 100)
    x = video.load(BUNNY, max_frames=2)
    with pytest.raises(InputError, match="NaN/Inf"):
        video.save(torch.full_like(x, float("nan")), tmp_path / "nan.mp4", fps=25)
    with pytest.raises(InputError, match="got shape"):
        video.save(torch.zeros(1, 4, 2, 8, 8), tmp_path / "four.mp4", fps=25)
    with pytest.raises(InputError, match="never lossless|cannot store"):
        video.save(x, tmp_path / "clip.gif", fps=25, lossless=True)
    with pytest.raises(InputError, match="unknown suffix"):
        video.save(x, tmp_path / "clip.flv", fps=25)
    with pytest.raises(InputError, match="no frames"):
        video.to_canonical(np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="NaN/Inf"):
        video.to_canonical(np.full((2, 8, 8, 3), np.inf, np.float32))


# --------------------------------------------------------------------------------------------- audio


def test_empty_audio(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros((0, 1), np.float32), 16000)
    with _expect(MediaError, tmp_path / "silence.wav", "no audio samples"):
        audio.load(tmp_path / "silence.wav")
    with _expect(MediaError, SPEECH, "no audio samples after offset 10.0s"):
        audio.load(SPEECH, offset=10.0)
    with pytest.raises(InputError, match="no samples"):
        audio.load(np.zeros(0, np.float32), source_rate=16000)
    with pytest.raises(InputError, match="0 samples"):
        audio.save(torch.zeros(1, 1, 0), tmp_path / "none.wav", 16000)


def test_truncated_and_corrupt_audio(tmp_path):
    wav = SPEECH.read_bytes()
    half_wav = _write(tmp_path / "half.wav", wav[: len(wav) // 2])
    with _expect(MediaError, half_wav, "truncated"):
        audio.load(half_wav)
    flac = GUITAR.read_bytes()
    half_flac = _write(tmp_path / "half.flac", flac[: len(flac) // 2])
    with _expect(MediaError, half_flac, "truncated"):
        audio.load(half_flac)
    garbage = _write(tmp_path / "garbage.wav", b"RIFF" + bytes(range(200)))
    with _expect(MediaError, garbage, "cannot decode audio"):
        audio.load(garbage)
    text = _write(tmp_path / "notes.mp3", b"a shopping list, not a song\n" * 40)
    with _expect(MediaError, text, "cannot decode audio"):
        audio.load(text)
    with _expect(MediaError, text, "not a media file"):
        detect(text)
    with _expect(MediaError, CHELSEA, "no audio stream"):
        audio.load(CHELSEA)


def test_bad_audio_arrays_and_saves(tmp_path):
    with pytest.raises(InputError, match="NaN/Inf"):
        audio.load(np.array([0.0, np.nan, 0.1], np.float32), source_rate=16000)
    with pytest.raises(InputError, match="channels_first"):
        audio.load(np.zeros((200, 300), np.float32), source_rate=16000)
    with pytest.raises(InputError, match="100 channels"):
        audio.load(np.zeros((100, 300), np.float32), source_rate=16000, channels_first=True)
    with pytest.raises(InputError, match="NaN/Inf"):
        audio.save(torch.tensor([[[0.0, float("inf")]]]), tmp_path / "inf.wav", 16000)
    with pytest.raises(InputError, match="batch of 2"):
        audio.save(torch.zeros(2, 1, 10), tmp_path / "two.wav", 16000)
    with pytest.raises(InputError, match="unknown suffix"):
        audio.save(torch.zeros(1, 1, 10), tmp_path / "x.midi", 16000)
    with pytest.raises(InputError, match="subtype"):
        audio.save(torch.zeros(1, 1, 10), tmp_path / "x.flac", 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="mono or stereo"):
        audio.save(torch.zeros(1, 6, 1000), tmp_path / "six.mp3", 16000)
    with pytest.raises(InputError, match="positive"):
        audio.save(torch.zeros(1, 1, 10), tmp_path / "x.wav", 0)


def test_detect_by_content_not_extension(tmp_path):
    assert detect(_write(tmp_path / "speech.mp4", SPEECH.read_bytes())) == "audio"
    assert detect(_write(tmp_path / "cat.wav", CHELSEA.read_bytes())) == "image"
    assert detect(_write(tmp_path / "clip.png", BUNNY.read_bytes())) == "video"
    audio_only = audio.save(audio.load(SPEECH), tmp_path / "speech.m4a", 16000)
    assert detect(audio_only) == "audio"
    Image.open(CHELSEA).save(tmp_path / "still.gif")
    assert detect(tmp_path / "still.gif") == "image"
    empty = _write(tmp_path / "empty.bin", b"")
    with _expect(MediaError, empty, "empty"):
        detect(empty)

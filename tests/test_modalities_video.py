"""Videos: decoding, frame sampling by fps and stride, lossless round trips, causal clip chunking."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from modalities import chunking, detect, metrics, samples, video
from registry.errors import ConfigError, InputError

BUNNY = samples.path("bbb_clip.mp4")
PAN = samples.path("chelsea_pan.gif")


def _counting_video(frames: int, h: int = 32, w: int = 48) -> torch.Tensor:
    """Frame i is a flat grey of level 10 * i, so the decoded level tells which frame was picked."""
    levels = (np.arange(frames) * 10).astype(np.uint8)
    arr = np.broadcast_to(levels[:, None, None, None], (frames, h, w, 3)).copy()
    return video.to_canonical(arr)


def _frame_ids(x: torch.Tensor) -> list[int]:
    levels = ((x[0, 0].mean(dim=(-1, -2)) + 1) * 127.5).round()
    return [int(v) // 10 for v in levels]


def test_sample_clip_decodes_with_native_rate():
    x, fps = video.load_with_fps(BUNNY)
    assert x.shape == (1, 3, 75, 180, 320) and x.dtype == torch.float32
    assert fps == 25.0
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    meta = video.info(BUNNY)
    assert (meta.width, meta.height, meta.frames, meta.codec, meta.has_audio) == (320, 180, 75, "h264", True)


def test_decoded_frames_match_pyav_directly():
    with av.open(str(BUNNY)) as c:
        ref = [f.to_ndarray(format="rgb24") for _, f in zip(range(5), c.decode(video=0), strict=False)]
    got = video.frames_to_uint8(video.load(BUNNY, max_frames=5))
    assert np.array_equal(got, np.stack(ref))


def test_gif_decodes_as_video():
    assert detect(PAN) == "video"
    x, fps = video.load_with_fps(PAN)
    assert x.shape == (1, 3, 16, 96, 128) and fps == pytest.approx(10.0)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4", ".webm", ".mov"])
def test_lossless_round_trip(tmp_path, suffix):
    x = video.load(BUNNY, max_frames=6)[..., 40:104, 100:196]
    out = video.save(x, tmp_path / f"clip{suffix}", fps=25, lossless=True)
    y, fps = video.load_with_fps(out)
    assert fps == pytest.approx(25.0)
    assert torch.equal(x, y)


def test_lossy_mp4_quality_and_odd_size(tmp_path):
    x = video.load(BUNNY, max_frames=10)[..., :99, :161]
    out = video.save(x, tmp_path / "lossy.mp4", fps=25)
    y = video.load(out)
    assert y.shape == (1, 3, 10, 100, 162)  # 4:2:0 needs even sides: one replicated row and column
    assert float(metrics.psnr(y[..., :99, :161], x)) > 32.0
    assert detect(out) == "video"


def test_gif_save_round_trip_close(tmp_path):
    x = video.load(PAN, max_frames=4)
    y = video.load(video.save(x, tmp_path / "again.gif", fps=10))
    assert y.shape == x.shape and float(metrics.psnr(y, x)) > 28.0


def test_sampling_by_target_fps(tmp_path):
    path = video.save(_counting_video(20), tmp_path / "count.mkv", fps=25, lossless=True)
    down, fps = video.load_with_fps(path, fps=5)
    assert fps == 5 and _frame_ids(down) == [0, 5, 10, 15]
    up = video.load(path, fps=50)
    assert _frame_ids(up) == [i // 2 for i in range(40)]
    assert _frame_ids(video.load(path)) == list(range(20))


def test_sampling_by_stride_and_window(tmp_path):
    path = video.save(_counting_video(20), tmp_path / "count.mkv", fps=25, lossless=True)
    strided, fps = video.load_with_fps(path, stride=3)
    assert _frame_ids(strided) == [0, 3, 6, 9, 12, 15, 18] and fps == pytest.approx(25 / 3)
    window = video.load(path, start=0.2, duration=0.2)
    assert _frame_ids(window) == [5, 6, 7, 8, 9]
    assert _frame_ids(video.load(path, fps=12.5, start=0.4)) == [10, 12, 14, 16, 18]
    assert _frame_ids(video.load(path, max_frames=3)) == [0, 1, 2]
    with pytest.raises(InputError, match="not both"):
        video.load(path, fps=5, stride=2)


def test_array_inputs():
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 8, 10, 3), dtype=np.uint8)
    x = video.load(frames)
    assert x.shape == (1, 3, 4, 8, 10)
    assert np.array_equal(video.frames_to_uint8(x), frames)
    tchw = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(video.to_canonical(tchw), x, atol=1e-6)
    with pytest.raises(InputError, match="channels"):
        video.to_canonical(np.zeros((4, 8, 10, 5), np.uint8))


def test_causal_length():
    assert [chunking.causal_length(t, 4) for t in (1, 2, 5, 6, 17, 18)] == [1, 5, 5, 9, 17, 21]
    assert chunking.causal_length(7, 1) == 7
    with pytest.raises(ConfigError):
        chunking.causal_length(5, 0)


def test_pad_to_causal_remembers_tail():
    x = _counting_video(7)
    padded, extra = chunking.pad_to_causal(x, 4)
    assert padded.shape[2] == 9 and extra == 2
    assert torch.equal(padded[:, :, 7], x[:, :, 6]) and torch.equal(padded[:, :, 8], x[:, :, 6])
    black, _ = chunking.pad_to_causal(x, 4, mode="black")
    assert float(black[:, :, 7:].max()) == -1.0


def test_chunk_long_video_into_causal_clips():
    x = video.load(BUNNY)  # 75 frames
    clip = chunking.causal_length(17, 4)
    pieces = chunking.chunk_video(x, clip)
    assert pieces.clips.shape == (5, 3, 17, 180, 320)
    assert pieces.tail_padding == 10 and pieces.frames == 75
    assert torch.equal(pieces.clips[1], x[0, :, 17:34])
    assert torch.equal(pieces.merge(pieces.clips), x)


def test_chunk_batch_of_videos():
    x = torch.cat([_counting_video(10), _counting_video(10).flip(2)])
    pieces = chunking.chunk_video(x, 4)
    assert pieces.clips.shape[0] == 6 and pieces.clips_per_video == 3
    assert torch.equal(pieces.clips[3], x[1, :, 0:4])
    assert torch.equal(pieces.merge(pieces.clips), x)
    with pytest.raises(InputError, match="merge expects"):
        pieces.merge(pieces.clips[:5])

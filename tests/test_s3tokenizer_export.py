"""ONNX export (torch.onnx.export(dynamo=True), opset 18) of S3Tokenizer graphs, run in onnxruntime.

Graphs: waveform -> ids (`encoder_module()`, v2 and v1 architectures), log-mel + lengths -> ids
(`mel_encoder_module()`, upstream ONNX's own interface) and the log-mel front end alone. Each runs at
two input shapes (dynamic batch and length): ids identical, floats within 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_s3tokenizer import speechlike, tiny

pytestmark = pytest.mark.heavy
ort = pytest.importorskip("onnxruntime", reason="the ONNX checks run the graphs in onnxruntime")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")


def export(module: torch.nn.Module, args: tuple, path: Path, names: list[str], shapes: tuple) -> object:
    torch.onnx.export(module, args, str(path), dynamo=True, opset_version=18, input_names=names,
                      dynamic_shapes=shapes, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def waves(batch: int, seconds: float, seed: int) -> torch.Tensor:
    return torch.stack([speechlike(seconds, seed + i) * (0.5 + 0.5 * i) for i in range(batch)])[:, None]


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_waveform_to_ids_graph(tmp_path: Path, version: str) -> None:
    tok = tiny(version)
    batch, samples = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("samples", min=401, max=480000)
    session = export(tok.encoder_module(), (waves(2, 1.0, 0),), tmp_path / "enc.onnx", ["audio"],
                     (({0: batch, 2: samples},),))
    for x in (waves(1, 2.37, 3), waves(3, 4.0, 5)):
        ours = tok.encode_ids(x)
        out = session.run(None, {"audio": x.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (x.shape[0], tok.num_tokens(x.shape[-1]))
        assert np.array_equal(out, ours.numpy())


def test_mel_and_lengths_to_ids_graph(tmp_path: Path) -> None:
    tok = tiny("v2")
    mel, frames = tok.frontend.forward_clips([speechlike(1.0, 1), speechlike(0.6, 2)])
    batch, time = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("frames", min=8, max=3000)
    session = export(tok.mel_encoder_module(), (mel, frames), tmp_path / "mel.onnx", ["mel", "mel_lengths"],
                     ({0: batch, 2: time}, {0: batch}))
    for clips in ([speechlike(2.5, 3), speechlike(0.9, 4), speechlike(1.7, 5)], [speechlike(3.1, 6)]):
        mel, frames = tok.frontend.forward_clips(clips)
        with torch.no_grad():
            ours = tok.ids_from_mel(mel, frames)
        out = session.run(None, {"mel": mel.numpy(), "mel_lengths": frames.numpy()})[0]
        assert np.array_equal(out, ours.numpy())
        for i, clip in enumerate(clips):  # and, within each length, the ids of the clip alone
            n = tok.num_tokens(clip.shape[0])
            assert np.array_equal(out[i, :n], tok.encode(clip).ids[0].numpy())


def test_log_mel_graph(tmp_path: Path) -> None:
    front = tiny("v2").frontend
    batch, samples = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("samples", min=401, max=480000)
    session = export(front, (waves(2, 1.0, 0)[:, 0],), tmp_path / "mel.onnx", ["audio"], ({0: batch, 1: samples},))
    for x in (waves(1, 2.37, 3)[:, 0], waves(3, 0.5, 5)[:, 0]):
        out = session.run(None, {"audio": x.numpy()})[0]
        assert np.abs(out - front(x).numpy()).max() <= 1e-4

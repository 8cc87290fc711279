"""ONNX export (torch.onnx.export(dynamo=True), opset 18) of XY-Tokenizer's encoder and decoder graphs.

The tiny variant's graphs run in onnxruntime at two input shapes each (dynamic batch and length):
ids identical to PyTorch, audio within 1e-4. The encoder graph covers one window; the 479,900-sample
shape checks the 30 s cap of the mel padding (a symbolic min in the graph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_xytokenizer import speechlike, tiny

pytestmark = pytest.mark.heavy
ort = pytest.importorskip("onnxruntime", reason="the ONNX checks run the graphs in onnxruntime")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")


def export(module: torch.nn.Module, args: tuple, path: Path, names: list[str], shapes: tuple) -> object:
    torch.onnx.export(module, args, str(path), dynamo=True, opset_version=18, input_names=names,
                      dynamic_shapes=shapes, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_encoder_graph(tmp_path: Path) -> None:
    tok = tiny()
    batch, samples = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("samples", min=1280, max=480_000)
    example = torch.stack([speechlike(2.0, 0), speechlike(2.0, 1)])[:, None]
    session = export(tok.encoder_module(), (example,), tmp_path / "enc.onnx", ["audio"], (({0: batch, 2: samples},),))
    shapes = (torch.stack([speechlike(1.37, i) for i in range(3)])[:, None], speechlike(479_900 / 16000, 4)[None, None])
    for x in shapes:
        with torch.no_grad():
            ours = tok.quantizer.encode(tok.quantizer_in(tok.latent(x)))[:, : x.shape[-1] // 1280]
        out = session.run(None, {"audio": x.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (x.shape[0], x.shape[-1] // 1280, tok.config.num_quantizers)
        assert np.array_equal(out, ours.numpy())


def test_decoder_graph(tmp_path: Path) -> None:
    tok = tiny()
    batch, codes = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("codes", min=1, max=375)
    torch.manual_seed(0)
    example = torch.randint(0, tok.config.codebook_size, (2, 20, tok.config.num_quantizers))
    session = export(tok.decoder_module(), (example,), tmp_path / "dec.onnx", ["ids"], (({0: batch, 1: codes},),))
    for shape in ((1, 7), (3, 375)):
        ids = torch.randint(0, tok.config.codebook_size, (*shape, tok.config.num_quantizers))
        with torch.no_grad():
            ours = tok.decode_ids(ids)
        out = session.run(None, {"ids": ids.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (shape[0], 1, shape[1] * 1280)
        assert float(np.abs(out - ours.numpy()).max()) <= 1e-4

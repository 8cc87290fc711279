"""ONNX export of TokenFlow's encoder (image -> ids) and decoder (ids -> image), checked in onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from registry import create_tokenizer

pytestmark = pytest.mark.heavy  # two dynamo exports of the tiny variant: tens of seconds on 2 cores


def export(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Any:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'tokenzoo[onnx]')")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'tokenzoo[onnx]')")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=(({0: "batch"},),),
                                    opset_version=18, verbose=False)
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    tok = create_tokenizer("tokenflow-tiny").eval()
    folder = tmp_path_factory.mktemp("tokenflow_onnx")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ids = tok.encode_ids(x)
    return tok, export(tok.encoder_module(), x, folder / "encoder.onnx"), export(tok.decoder_module(), ids,
                                                                                  folder / "decoder.onnx")


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_pytorch(sessions: Any, batch: int) -> None:
    tok, encoder, decoder = sessions
    x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    with torch.no_grad():
        ids = tok.encode_ids(x)
        image = tok.decode_ids(ids)
    onnx_ids = encoder.run(None, {encoder.get_inputs()[0].name: x.numpy()})[0]
    assert onnx_ids.shape == (batch, 21)
    assert np.array_equal(onnx_ids, ids.numpy()), "ONNX encoder ids differ from PyTorch"
    onnx_image = decoder.run(None, {decoder.get_inputs()[0].name: ids.numpy()})[0]
    assert float(np.abs(onnx_image - image.numpy()).max()) <= 1e-4

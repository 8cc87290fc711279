"""ONNX export (torch.onnx.export(dynamo=True), opset 18) of MOSS-Audio-Tokenizer's graphs, run in onnxruntime.

Tiny variant: wave -> ids (`encoder_module()`: padding to whole frames and the masked partial frame
included) and ids -> wave (`decoder_module()`), each exported once with dynamic batch and length (the
causal window becomes one dense band mask) and run at other shapes: ids identical, waves within 1e-4.
The full model is not exported here: its 7 GB of weights need ONNX external data and minutes per graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.mosstokenizer import MossTokenizer

pytestmark = pytest.mark.heavy
ort = pytest.importorskip("onnxruntime", reason="the ONNX checks run the graphs in onnxruntime")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")

HOP = 16


@pytest.fixture(scope="module")
def tok() -> MossTokenizer:
    torch.manual_seed(0)
    return zoo.create_tokenizer("mosstokenizer-tiny").eval()


def export(module: torch.nn.Module, args: tuple, path: Path, names: list[str], shapes: tuple) -> object:
    torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=18, input_names=names,
                      dynamic_shapes=shapes, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def waves(batch: int, samples: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.randn(batch, 1, samples, generator=g)).float()


def test_encoder_graph(tok: MossTokenizer, tmp_path: Path) -> None:
    batch, samples = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("samples", min=HOP, max=2_400_000)
    session = export(tok.encoder_module(), (waves(2, 1000, 0),), tmp_path / "enc.onnx", ["audio"],
                     (({0: batch, 2: samples},),))
    for x in (waves(1, 777, 1), waves(3, 1600, 2), waves(2, HOP, 3)):
        ours = tok.encode_ids(x)
        out = session.run(None, {"audio": x.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (x.shape[0], -(-x.shape[-1] // HOP), 4)
        assert np.array_equal(out, ours.numpy())


def test_decoder_graph(tok: MossTokenizer, tmp_path: Path) -> None:
    batch, frames = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("frames", min=1, max=100_000)
    ids = tok.encode_ids(waves(2, 500, 4))
    session = export(tok.decoder_module(), (ids,), tmp_path / "dec.onnx", ["ids"], (({0: batch, 1: frames},),))
    for x in (waves(1, 777, 5), waves(3, 1600, 6)):
        ids = tok.encode_ids(x)
        with torch.no_grad():
            ours = tok.decode_ids(ids)
        out = session.run(None, {"ids": ids.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (x.shape[0], 1, ids.shape[1] * HOP)
        assert np.abs(out - ours.numpy()).max() <= 1e-4

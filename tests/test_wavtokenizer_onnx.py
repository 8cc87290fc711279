"""ONNX export (torch.onnx.export(dynamo=True), opset 18) of WavTokenizer's graphs, run in onnxruntime.

Graphs of the tiny variant: wave -> ids (`encoder_module()`), ids -> wave (`decoder_module()`, the
real-valued iSTFT head included), and for ragged batches right-padded clips + lengths -> ids
(`ragged_encoder_module()`) and ids + token counts -> waves (`ragged_decoder_module()`).
Each is exported once with dynamic batch and length and run at two other shapes: ids identical, waves
within 1e-4. The full-size model's graphs are checked by bench/wavtokenizer.py (minutes to export).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.wavtokenizer import WavTokenizer

pytestmark = pytest.mark.heavy
ort = pytest.importorskip("onnxruntime", reason="the ONNX checks run the graphs in onnxruntime")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")

HOP = 8


@pytest.fixture(scope="module")
def tok() -> WavTokenizer:
    torch.manual_seed(0)
    return zoo.create_tokenizer("wavtokenizer-tiny").eval()


def export(module: torch.nn.Module, args: tuple, path: Path, names: list[str], shapes: tuple) -> object:
    torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=18, input_names=names,
                      dynamic_shapes=shapes, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def waves(batch: int, samples: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 24000.0
    tone = torch.sin(2 * torch.pi * 220.0 * t)
    return (0.4 * tone + 0.1 * torch.randn(batch, 1, samples, generator=g)).float()


def test_encoder_graph(tok: WavTokenizer, tmp_path: Path) -> None:
    batch, samples = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("samples", min=HOP, max=2_400_000)
    session = export(tok.encoder_module(), (waves(2, 1000, 0),), tmp_path / "enc.onnx", ["audio"],
                     (({0: batch, 2: samples},),))
    for x in (waves(1, 4321, 1), waves(3, 17, 2), waves(2, 2400, 3)):
        ours = tok.encode_ids(x)
        out = session.run(None, {"audio": x.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (x.shape[0], -(-x.shape[-1] // HOP))
        assert np.array_equal(out, ours.numpy())


def test_decoder_graph(tok: WavTokenizer, tmp_path: Path) -> None:
    batch, frames = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("frames", min=2, max=100_000)
    ids = tok.encode_ids(waves(2, 400, 4))
    session = export(tok.decoder_module(), (ids,), tmp_path / "dec.onnx", ["ids"], (({0: batch, 1: frames},),))
    for x in (waves(1, 3000, 5), waves(3, 24, 6)):
        ids = tok.encode_ids(x)
        with torch.no_grad():
            ours = tok.decode_ids(ids)
        out = session.run(None, {"ids": ids.numpy()})[0]
        assert out.shape == tuple(ours.shape) == (x.shape[0], 1, ids.shape[1] * HOP)
        assert np.abs(out - ours.numpy()).max() <= 1e-4


def test_ragged_encoder_graph(tok: WavTokenizer, tmp_path: Path) -> None:
    batch, samples = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("samples", min=HOP, max=2_400_000)
    session = export(tok.ragged_encoder_module(), (waves(2, 600, 7), torch.tensor([600, 333])),
                     tmp_path / "ragged.onnx", ["audio", "lengths"], (({0: batch, 2: samples}, {0: batch}),))
    for lengths in ([1000, 999, 64, 9], [4000]):
        x = waves(len(lengths), max(lengths), 8)
        for b, n in enumerate(lengths):
            x[b, :, n:] = 0.0
        out = session.run(None, {"audio": x.numpy(), "lengths": np.array(lengths, dtype=np.int64)})[0]
        for b, n in enumerate(lengths):
            alone = tok.encode(x[b : b + 1, :, :n]).ids[0].numpy()
            assert np.array_equal(out[b, : alone.shape[0]], alone)
            assert not out[b, alone.shape[0] :].any()


def test_ragged_decoder_graph(tok: WavTokenizer, tmp_path: Path) -> None:
    batch, frames = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("frames", min=2, max=100_000)
    ids = tok.encode_ids(waves(2, 400, 9))
    session = export(tok.ragged_decoder_module(), (ids, torch.tensor([50, 31])), tmp_path / "rdec.onnx",
                     ["ids", "lengths"], (({0: batch, 1: frames}, {0: batch}),))
    for counts in ([120, 77, 1], [64]):
        ids = tok.encode_ids(waves(len(counts), max(counts) * HOP, 10))
        out = session.run(None, {"ids": ids.numpy(), "lengths": np.array(counts, dtype=np.int64)})[0]
        for b, n in enumerate(counts):
            with torch.no_grad():
                alone = tok.decode_ids(ids[b : b + 1, :n])[0].numpy()
            assert np.abs(out[b, :, : n * HOP] - alone).max() <= 1e-4

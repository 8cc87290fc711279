"""OmniTokenizer exports: image and video encoders and decoders, one graph each with dynamic batch, frames
and size, checked in onnxruntime at two or more shapes (upstream's own export crashes).

The model is the tiny variant cut to one layer of each kind (full, window and temporal attention in the
encoder; temporal and full in the decoder) and the ONNX graph optimiser is skipped: symbolic-shape export
costs ~4 s of CPU per layer, and the suite shares two cores. The default (optimised) export of the whole
tiny variant passes the same checks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo.omnitokenizer as om
from registry import create_tokenizer

pytestmark = pytest.mark.heavy
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'tokenzoo[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (needed by torch.onnx dynamo export)")

Dim = torch.export.Dim


@pytest.fixture(scope="module")
def tok() -> om.OmniTokenizer:
    torch.manual_seed(0)
    return create_tokenizer("omnitokenizer-tiny", temporal_depth=1, dec_block="t").eval()


def export(module: torch.nn.Module, example: torch.Tensor, dims: dict, path: Path) -> ort.InferenceSession:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=18,
                          dynamic_shapes=((dims,),), optimize=False, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, x: torch.Tensor) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def pixels(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def codes(*shape: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


# Token grids must be whole 2x2 windows for the tiny encoder (pixels: multiples of 8).
SIDE = {"h": Dim("h", min=1, max=16), "w": Dim("w", min=1, max=16)}


def test_video_encoder_exports(tok: om.OmniTokenizer, tmp_path: Path) -> None:
    dims = {0: Dim("batch", max=8), 2: 4 * Dim("groups", min=0, max=8) + 1, 3: 8 * SIDE["h"], 4: 8 * SIDE["w"]}
    session = export(tok.encoder_module(), pixels(2, 3, 9, 16, 24, seed=0), dims, tmp_path / "video_encoder.onnx")
    for shape in [(2, 3, 9, 16, 24), (1, 3, 5, 24, 8), (1, 3, 1, 8, 16)]:
        x = pixels(*shape, seed=sum(shape))
        with torch.no_grad():
            expected = tok.encode_ids(x).numpy()
        got = run(session, x)
        assert got.dtype == np.int64 and np.array_equal(got, expected), shape


def test_video_decoder_exports(tok: om.OmniTokenizer, tmp_path: Path) -> None:
    dims = {0: Dim("batch", max=8), 1: Dim("frames", max=8), 2: Dim("h", max=32), 3: Dim("w", max=32)}
    session = export(tok.decoder_module(), codes(2, 3, 4, 6, seed=0), dims, tmp_path / "video_decoder.onnx")
    for shape in [(2, 3, 4, 6), (1, 1, 6, 2)]:
        ids = codes(*shape, seed=sum(shape))
        with torch.no_grad():
            expected = tok.decode_ids(ids).numpy()
        got = run(session, ids)
        assert got.shape == expected.shape and float(np.abs(got - expected).max()) <= 1e-4, shape


def test_image_encoder_exports(tok: om.OmniTokenizer, tmp_path: Path) -> None:
    dims = {0: Dim("batch", max=8), 2: 8 * SIDE["h"], 3: 8 * SIDE["w"]}
    session = export(tok.encoder_module(), pixels(2, 3, 16, 24, seed=1), dims, tmp_path / "image_encoder.onnx")
    for shape in [(2, 3, 16, 24), (3, 3, 32, 8)]:
        x = pixels(*shape, seed=sum(shape))
        with torch.no_grad():
            expected = tok.encode_ids(x).numpy()
        assert np.array_equal(run(session, x), expected), shape


def test_image_decoder_exports(tok: om.OmniTokenizer, tmp_path: Path) -> None:
    dims = {0: Dim("batch", max=8), 1: Dim("h", max=32), 2: Dim("w", max=32)}
    session = export(tok.decoder_module(), codes(2, 4, 6, seed=1), dims, tmp_path / "image_decoder.onnx")
    for shape in [(2, 4, 6), (1, 8, 2)]:
        ids = codes(*shape, seed=sum(shape))
        with torch.no_grad():
            expected = tok.decode_ids(ids).numpy()
        got = run(session, ids)
        assert got.shape == expected.shape and float(np.abs(got - expected).max()) <= 1e-4, shape

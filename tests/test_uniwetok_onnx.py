"""UniWeTok (tiny) encoder and decoder graphs through torch.onnx (dynamo) and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from registry import create_tokenizer

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'tokenzoo[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript is not installed; torch.onnx dynamo export needs it")

FLOAT_TOL = 1e-4


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return create_tokenizer("uniwetok-tiny").eval()


def export(module: torch.nn.Module, args: tuple, dynamic: tuple, path) -> ort.InferenceSession:
    # Example batch 2: torch.export specialises dimensions of size 1.
    program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic, opset_version=18)
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def encoder_session(tok, tmp_path_factory):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    dims = ({0: "batch", 2: "height", 3: "width"},)
    return export(tok.encoder_module("both").eval(), (x,), dims, tmp_path_factory.mktemp("onnx") / "enc.onnx")


@pytest.fixture(scope="module")
def decoder_session(tok, tmp_path_factory):
    ids = torch.randint(0, 256, (2, 8, 8, 2))
    noise = torch.randn(2, 8, 8, 16)
    dims = ({0: "batch", 1: "h", 2: "w"}, {0: "batch", 1: "h", 2: "w"})
    return export(tok.decoder_module().eval(), (ids, noise), dims, tmp_path_factory.mktemp("onnx") / "dec.onnx")


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 48, 64)])
def test_encoder_graph_gives_the_same_ids_and_bits(tok, encoder_session, shape) -> None:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[-1])) * 2 - 1
    ids, bits = encoder_session.run(None, {encoder_session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref_ids = tok.encode_ids(x)
        ref_bits = tok.encode_bits(x)
    assert ids.dtype == np.int64 and ids.shape == tuple(ref_ids.shape)
    assert np.array_equal(ids, ref_ids.numpy())
    assert np.array_equal(bits, ref_bits.numpy())


@pytest.mark.parametrize("grid", [(1, 8, 8), (2, 6, 10)])
def test_decoder_graph_matches_with_given_noise(tok, decoder_session, grid) -> None:
    g = torch.Generator().manual_seed(sum(grid))
    ids = torch.randint(0, 256, (*grid, 2), generator=g)
    noise = torch.randn(*grid, 16, generator=g)
    names = [i.name for i in decoder_session.get_inputs()]
    out = decoder_session.run(None, {names[0]: ids.numpy(), names[1]: noise.numpy()})[0]
    with torch.no_grad():
        ref = tok.decode_ids(ids, noise)
    assert out.shape == tuple(ref.shape) == (grid[0], 3, grid[1] * 4, grid[2] * 4)
    assert float(np.abs(out - ref.numpy()).max()) <= FLOAT_TOL


def test_decoder_graph_without_noise_samples_it(tok, tmp_path) -> None:
    """The generic export path (ids only) keeps upstream's sampling: RandomNormalLike inside the graph."""
    ids = torch.randint(0, 256, (2, 8, 8, 2), generator=torch.Generator().manual_seed(1))
    session = export(tok.decoder_module().eval(), (ids,), ({0: "batch", 1: "h", 2: "w"},), tmp_path / "d.onnx")
    name = session.get_inputs()[0].name
    first = session.run(None, {name: ids[:1].numpy()})[0]
    second = session.run(None, {name: ids[:1].numpy()})[0]
    assert first.shape == (1, 3, 32, 32) and np.isfinite(first).all()
    assert float(np.abs(first - second).max()) > 0, "two decodes of a stochastic graph drew the same noise"

"""The SDPA path exports to ONNX (dynamo exporter, opset 18) for every mask kind and runs in onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from zoo.layers.attention import MaskSpec, attention

ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed (optional extra: tokenzoo[onnx])"
)
pytest.importorskip("onnxscript", reason="onnxscript is not installed (the dynamo ONNX exporter needs it)")

BATCH, HEADS, LENGTH, HEAD_DIM = 2, 2, 32, 8

CASES = {
    "full": MaskSpec.full(),
    "causal": MaskSpec.causal(),
    "sliding_window": MaskSpec.sliding_window(5, 2),
    "causal_window": MaskSpec.sliding_window(6, 0),
    "block_diagonal": MaskSpec.block_diagonal([10, 14, 8]),
    "block_diagonal_causal": MaskSpec.block_diagonal([12, 20]).causal(),
    "key_padding": MaskSpec.key_padding([20, 32]),
    "causal_key_padding": MaskSpec.causal().key_padding([0, 17]),
    "grid_window": MaskSpec.grid_window((2, 4, 4), 2),
    "temporal": MaskSpec.temporal((2, 4, 4)),
}


class _Attend(torch.nn.Module):
    def __init__(self, mask: MaskSpec, with_bias: bool) -> None:
        super().__init__()
        self.mask = mask
        self.bias = torch.nn.Parameter(torch.randn(HEADS, LENGTH, LENGTH)) if with_bias else None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attention(q, k, v, mask=self.mask, bias=self.bias, backend="sdpa")


class _AttendPadded(torch.nn.Module):
    """Key lengths as a graph input: one exported model serves every padding pattern."""

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return attention(q, k, v, mask=MaskSpec.sliding_window(4, 0).key_padding(lengths), backend="sdpa")


class _AttendCausal(torch.nn.Module):
    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return attention(q, k, v, mask=MaskSpec.causal(), backend="sdpa")


def _export_and_run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, str(path), dynamo=True, opset_version=18, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)


# every kind without a bias, and the kinds whose bias handling differs (sliced per chunk, per block,
# per window) with one
EXPORTS = [(name, False) for name in CASES] + [
    (name, True) for name in ("causal", "sliding_window", "block_diagonal", "grid_window")
]


@pytest.mark.parametrize("name,with_bias", EXPORTS)
def test_sdpa_path_exports_and_matches_onnxruntime(name: str, with_bias: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _Attend(CASES[name], with_bias)
    inputs = tuple(torch.randn(BATCH, HEADS, LENGTH, HEAD_DIM) for _ in range(3))
    (got,) = _export_and_run(module, inputs, tmp_path / f"{name}.onnx")
    with torch.no_grad():
        want = attention(*inputs, mask=module.mask, bias=module.bias, backend="math")
    assert abs(torch.from_numpy(got) - want).max().item() <= 1e-5


def test_key_lengths_can_be_a_graph_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    inputs = tuple(torch.randn(BATCH, HEADS, LENGTH, HEAD_DIM) for _ in range(3))
    path = tmp_path / "padded.onnx"
    _export_and_run(_AttendPadded(), (*inputs, torch.tensor([32, 20])), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for lengths in ([5, 32], [0, 11]):
        values = (*inputs, torch.tensor(lengths))
        feeds = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), values, strict=True)}
        (got,) = session.run(None, feeds)
        mask = MaskSpec.sliding_window(4, 0).key_padding(lengths)
        want = attention(*inputs, mask=mask, backend="math")
        assert abs(torch.from_numpy(got) - want).max().item() <= 1e-5, lengths


@pytest.mark.parametrize("pattern", ["causal", "sliding_window"])
def test_dynamic_length_export_serves_other_lengths(pattern: str, tmp_path: Path) -> None:
    """With a symbolic length the exported graph must not be specialised to the example length."""
    from torch.export import Dim

    length = Dim("length", min=2, max=1024)
    shapes = {name: {2: length} for name in ("q", "k", "v")}
    shapes["lengths"] = None
    module = _AttendPadded() if pattern == "sliding_window" else _AttendCausal()
    example = tuple(torch.randn(BATCH, HEADS, LENGTH, HEAD_DIM) for _ in range(3))
    path = tmp_path / f"dynamic_{pattern}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (*example, torch.tensor([LENGTH, 9])),
            str(path),
            dynamic_shapes=shapes,
            dynamo=True,
            opset_version=18,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for other in (7, 45):
        inputs = (*(torch.randn(BATCH, HEADS, other, HEAD_DIM) for _ in range(3)), torch.tensor([other, 5]))
        feeds = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs, strict=True)}
        (got,) = session.run(None, feeds)
        want = module(*inputs)
        assert got.shape == tuple(want.shape)
        assert abs(torch.from_numpy(got) - want).max().item() <= 1e-5, other

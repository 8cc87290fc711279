"""ONNX export (torch.onnx.export(dynamo=True), opset 18) of every quantizer's encode and decode.

Each graph is exported once with dynamic axes and run in onnxruntime at two input shapes: ids must be
identical and codes within 1e-6 (relative to the codes' magnitude when it exceeds 1, i.e. float32
rounding of sums such as multi-scale bicubic upsampling).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from zoo.layers.quantize import (
    BSQ,
    FSQ,
    LFQ,
    DualCodebookVQ,
    GroupedBinary,
    GroupVQ,
    MultiScaleResidualVQ,
    Quantizer,
    ResidualLFQ,
    ResidualVQ,
    VectorQuantizer,
)

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript is needed by torch.onnx.export(dynamo=True)")

pytestmark = pytest.mark.heavy


class Call(torch.nn.Module):
    """Wrap one method of a quantizer as a module to export."""

    def __init__(self, quantizer: Quantizer, method: str) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.quantizer, self.method)(x)


def _vq(**kwargs: object) -> VectorQuantizer:
    q = VectorQuantizer(300, 8, chunk_size=128, **kwargs)  # three codebook chunks in the graph
    q.codebook.data.normal_()
    return q


def _cases() -> dict[str, Callable[[], Quantizer]]:
    return {
        "vq-euclidean": lambda: _vq(),
        "vq-cosine": lambda: _vq(metric="cosine"),
        "vq-l2-codes": lambda: _vq(normalize_codes=True),
        "rvq": lambda: ResidualVQ(3, 64, 8),
        "group-vq": lambda: GroupVQ(2, 32, 8),
        "fsq": lambda: FSQ([8, 8, 8, 5, 5, 5]),
        "fsq-s3v2": lambda: FSQ([3] * 8, bound="scaled_tanh", tanh_scale=0.9990000128746033),
        "lfq": lambda: LFQ(18),
        "bsq": lambda: BSQ(14),
        "grouped-binary": lambda: GroupedBinary(128, 16),
        "grouped-binary-63": lambda: GroupedBinary(126, 63, bit_order="msb_first"),
        "residual-lfq": lambda: ResidualLFQ(3, 64, 16, 4, input_dim=12, output_dim=10),
        "dual": lambda: DualCodebookVQ(200, 12, 4, chunk_size=64),
        "multiscale-dual-phi": lambda: MultiScaleResidualVQ(
            DualCodebookVQ(200, 12, 4), [1, 2, 3, 5], num_phi=2
        ),
    }


def _export(module: torch.nn.Module, example: torch.Tensor, dynamic: dict[int, object], path: Path):
    torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=(dynamic,), opset_version=18)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, x: torch.Tensor):  # type: ignore[no-untyped-def]
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("name", list(_cases()))
def test_encode_and_decode_export_to_onnx(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    quantizer = _cases()[name]().eval()
    grid = isinstance(quantizer, MultiScaleResidualVQ)
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    if grid:
        h, w = quantizer.scales[-1]
        shapes = [(2, h, w, quantizer.dim), (3, h, w, quantizer.dim)]
        latent_axes: dict[int, object] = {0: batch}
        id_axes: dict[int, object] = {0: batch}
    else:
        shapes = [(2, 5, quantizer.dim), (3, 11, quantizer.dim)]
        latent_axes = {0: batch, 1: time}
        id_axes = {0: batch, 1: time}
    inputs = [torch.randn(*shape) * 2 for shape in shapes]
    with torch.no_grad():
        encoder = _export(Call(quantizer, "encode"), inputs[0], latent_axes, tmp_path / "encode.onnx")
        decoder = _export(
            Call(quantizer, "decode"), quantizer.encode(inputs[0]), id_axes, tmp_path / "decode.onnx"
        )
        for z in inputs:
            ids = quantizer.encode(z)
            onnx_ids = _run(encoder, z)
            assert onnx_ids.dtype == ids.numpy().dtype and onnx_ids.shape == tuple(ids.shape)
            assert (onnx_ids == ids.numpy()).all(), f"{name}: ids differ at input shape {tuple(z.shape)}"
            codes = quantizer.decode(ids).numpy()
            onnx_codes = _run(decoder, ids)
            assert onnx_codes.shape == codes.shape
            tolerance = 1e-6 * max(1.0, float(abs(codes).max()))
            assert float(abs(onnx_codes - codes).max()) <= tolerance, f"{name}: codes differ"

"""Every quantizer round-trips: decode(encode(z)) equals the eval-mode forward(z).quantized exactly."""

from __future__ import annotations

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


def _cases() -> list[tuple[str, Quantizer]]:
    torch.manual_seed(0)
    return [
        ("vq-euclidean", VectorQuantizer(512, 16)),
        ("vq-cosine", VectorQuantizer(512, 16, metric="cosine")),
        ("vq-l2-codes", VectorQuantizer(512, 16, normalize_codes=True)),
        ("rvq", ResidualVQ(4, 256, 16)),
        ("group-vq", GroupVQ(2, 64, 16)),
        ("fsq", FSQ([8, 8, 8, 5, 5, 5])),
        ("fsq-s3v2", FSQ([3] * 8, bound="scaled_tanh", tanh_scale=0.9990000128746033)),
        ("lfq", LFQ(18)),
        ("bsq", BSQ(14)),
        ("grouped-binary", GroupedBinary(128, 16)),
        ("residual-lfq-moss", ResidualLFQ(4, 64, 32, 8, input_dim=24, output_dim=20)),
        ("dual-codebook", DualCodebookVQ(300, 12, 4)),
    ]


def test_multiscale_round_trip() -> None:
    torch.manual_seed(0)
    quantizer = MultiScaleResidualVQ(DualCodebookVQ(300, 12, 4), [1, 2, 3, 5]).eval()
    z = torch.randn(2, 5, 5, 16)
    out = quantizer(z)
    ids = quantizer.encode(z)
    assert ids.shape == (2, 1 + 4 + 9 + 25)
    assert torch.equal(ids, out.ids)
    assert torch.equal(quantizer.decode(ids), out.quantized)


@pytest.mark.parametrize(("name", "quantizer"), _cases(), ids=[name for name, _ in _cases()])
def test_decode_of_encode_equals_eval_forward(name: str, quantizer: Quantizer) -> None:
    quantizer.eval()
    z = torch.randn(2, 7, quantizer.dim) * 2
    out = quantizer(z)
    ids = quantizer.encode(z)
    assert ids.dtype == torch.int64
    assert torch.equal(ids, out.ids)
    codes = quantizer.decode(ids)
    assert codes.shape == out.quantized.shape
    assert torch.equal(codes, out.quantized)


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "quantizer"), _cases(), ids=[name for name, _ in _cases()])
def test_cuda_matches_cpu(name: str, quantizer: Quantizer) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    quantizer.eval()
    z = torch.randn(3, 50, quantizer.dim) * 2
    cpu_ids = quantizer.encode(z)
    gpu = quantizer.to("cuda")
    gpu_ids = gpu.encode(z.cuda())
    assert gpu_ids.device.type == "cuda"
    assert (gpu_ids.cpu() == cpu_ids).float().mean() > 0.99  # TF32/reduction order may flip near-ties
    out = gpu(z.cuda())
    assert torch.equal(gpu.decode(out.ids), out.quantized)
    quantizer.to("cpu")

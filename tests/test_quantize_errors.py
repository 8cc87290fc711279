"""Bad input to any quantizer raises a clear InputError; bad configuration raises ConfigError."""

from __future__ import annotations

import pytest
import torch

from registry.errors import ConfigError, InputError
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
    bits_to_ids,
    check_latents,
    nearest_code,
)


def _quantizers() -> dict[str, Quantizer]:
    torch.manual_seed(0)
    return {
        "vq": VectorQuantizer(64, 8),
        "vq-cosine": VectorQuantizer(64, 8, metric="cosine"),
        "rvq": ResidualVQ(3, 32, 8),
        "group-vq": GroupVQ(2, 16, 8),
        "fsq": FSQ([8, 5, 5, 5]),
        "lfq": LFQ(10),
        "bsq": BSQ(14),
        "grouped-binary": GroupedBinary(32, 8),
        "residual-lfq": ResidualLFQ(2, 16, 8, 4),
        "dual": DualCodebookVQ(32, 6, 2),
    }


QUANTIZERS = _quantizers()


def _ids_shape(q: Quantizer) -> tuple[int, ...]:
    sizes = q.codebook_sizes
    return (2, 3) if len(sizes) == 1 and not isinstance(q, ResidualVQ | ResidualLFQ) else (2, 3, len(sizes))


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_wrong_last_dim(name: str) -> None:
    q = QUANTIZERS[name].eval()
    z = torch.randn(2, 3, q.dim + 1)
    with pytest.raises(InputError, match=rf"\(\.\.\., {q.dim}\)"):
        q.encode(z)
    with pytest.raises(InputError, match="channels last"):
        q(z)


@pytest.mark.parametrize("name", list(QUANTIZERS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_latents(name: str, bad: float) -> None:
    q = QUANTIZERS[name].eval()
    z = torch.randn(2, 3, q.dim)
    z[1, 2, 0] = bad
    with pytest.raises(InputError, match="finite; got 1 NaN/Inf"):
        q.encode(z)
    with pytest.raises(InputError, match="finite"):
        q(z)


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_integer_latents_are_refused(name: str) -> None:
    q = QUANTIZERS[name].eval()
    with pytest.raises(InputError, match="floating"):
        q.encode(torch.ones(2, 3, q.dim, dtype=torch.long))


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_ids_out_of_range(name: str) -> None:
    q = QUANTIZERS[name].eval()
    ids = torch.zeros(_ids_shape(q), dtype=torch.long)
    too_big = ids.clone()
    too_big[0, 0] = q.codebook_sizes[0]
    with pytest.raises(InputError, match=r"\[0, codebook_size\)"):
        q.decode(too_big)
    negative = ids.clone()
    negative[1, 2] = -1
    with pytest.raises(InputError, match="got values in"):
        q.decode(negative)


@pytest.mark.parametrize("name", list(QUANTIZERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_ids_of_wrong_dtype(name: str, dtype: torch.dtype) -> None:
    q = QUANTIZERS[name].eval()
    with pytest.raises(InputError, match="integer tensor"):
        q.decode(torch.zeros(_ids_shape(q), dtype=dtype))


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_int32_ids_are_accepted(name: str) -> None:
    q = QUANTIZERS[name].eval()
    ids = q.encode(torch.randn(2, 3, q.dim))
    assert torch.equal(q.decode(ids.int()), q.decode(ids))


def test_too_many_codebooks() -> None:
    rvq = QUANTIZERS["rvq"]
    with pytest.raises(InputError, match="1 <= n_q <= 3"):
        rvq.decode(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(InputError, match=r"\(\.\.\., 4\)"):
        QUANTIZERS["grouped-binary"].decode(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(InputError, match=r"\(\.\.\., 2\)"):
        QUANTIZERS["group-vq"].decode(torch.zeros(2, 3, 1, dtype=torch.long))


def test_multiscale_shapes() -> None:
    q = MultiScaleResidualVQ(VectorQuantizer(16, 4), [1, 2, 4]).eval()
    with pytest.raises(InputError, match=r"\(B, 4, 4, 4\)"):
        q.encode(torch.randn(2, 3, 3, 4))
    with pytest.raises(InputError, match=r"expected one of \[1, 5, 21\]"):
        q.decode(torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(InputError, match="out of|codebook_size"):
        q.decode(torch.full((2, 5), 16))


@pytest.mark.parametrize(
    "build",
    [
        lambda: VectorQuantizer(16, 4, metric="manhattan"),
        lambda: VectorQuantizer(16, 4, gradient="gumbel"),
        lambda: VectorQuantizer(16, 4, ema_decay=1.5),
        lambda: ResidualVQ(0, 16, 4),
        lambda: GroupVQ(3, 16, 8),
        lambda: FSQ([1, 4]),
        lambda: FSQ([4, 4], bound="scaled_tanh"),
        lambda: LFQ(0),
        lambda: LFQ(63),
        lambda: GroupedBinary(10, 4),
        lambda: GroupedBinary(128, 64),
        lambda: DualCodebookVQ(16, 4, 4, weights=(1.0,)),
        lambda: MultiScaleResidualVQ(VectorQuantizer(16, 4), []),
    ],
)
def test_bad_configuration(build: object) -> None:
    with pytest.raises(ConfigError):
        build()  # type: ignore[operator]


def test_bad_search_arguments() -> None:
    with pytest.raises(ConfigError, match="metric"):
        nearest_code(torch.randn(3, 4), torch.randn(5, 4), metric="dot")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="chunk_size"):
        nearest_code(torch.randn(3, 4), torch.randn(5, 4), chunk_size=-1)
    with pytest.raises(ConfigError, match=r"num_quantizers must lie in \[1, 3\]"):
        QUANTIZERS["rvq"].encode(torch.randn(2, 4, 8), num_quantizers=4)
    with pytest.raises(InputError, match="multiple of group_bits"):
        bits_to_ids(torch.ones(2, 10, dtype=torch.bool), 4)


def test_checks_are_skipped_while_exporting() -> None:
    """Under torch.export (which ONNX export uses) the data-dependent checks are left out of the graph."""

    class Checked(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            check_latents(z, 4)
            return z * 2

    z = torch.full((2, 4), float("nan"))
    with pytest.raises(InputError):
        Checked()(z)
    exported = torch.export.export(Checked(), (torch.randn(2, 4),))
    assert torch.isnan(exported.module()(z)).all()

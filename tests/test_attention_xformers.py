"""xformers backend: the MaskSpec -> attn_bias translation (on CPU) and the real kernels (on CUDA)."""

from __future__ import annotations

import functools
import importlib
import importlib.util

import pytest
import torch

from registry.errors import BackendError
from tests.attention_cases import MASK_KINDS, make_case
from zoo.layers.attention import MaskSpec, attention
from zoo.layers.attention import dispatch as attention_dispatch
from zoo.layers.attention.xformers_backend import has_native_bias, xformers_attention

HAVE_XFORMERS = importlib.util.find_spec("xformers") is not None
needs_xformers = pytest.mark.skipif(
    not HAVE_XFORMERS, reason="xformers is not installed (optional extra: pip install 'tokenzoo[xformers]')"
)


def _reference_kernel(q, k, v, attn_bias=None, p=0.0, scale=None):
    """memory_efficient_attention by its documented definition, reading attn_bias via `materialize`."""
    attn_bias_types = importlib.import_module("xformers.ops.fmha.attn_bias")
    batch, mq, heads, _ = q.shape
    mk = k.shape[1]
    scores = torch.einsum("bmhk,bnhk->bhmn", q, k) * scale
    if isinstance(attn_bias, attn_bias_types.AttentionBias):
        scores = scores + attn_bias.materialize((batch, heads, mq, mk), dtype=scores.dtype)
    elif attn_bias is not None:
        scores = scores + attn_bias
    return torch.einsum("bhmn,bnhk->bmhk", scores.softmax(-1), v)


@needs_xformers
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_translation_matches_math(kind: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attn_bias objects we build (native or dense) mean exactly what the MaskSpec means.

    The CUDA kernel is swapped for its documented definition, so the whole xformers path (grid
    partitioning, layout, batch folding, translation, keyless rows) runs on CPU.
    """
    monkeypatch.setattr(
        attention_dispatch,
        "xformers_attention",
        functools.partial(xformers_attention, kernel=_reference_kernel),
    )
    case = make_case(kind, seed)
    reference = attention(case.q, case.k, case.v, case.mask, case.bias, backend="math")
    out = attention(case.q, case.k, case.v, case.mask, case.bias, backend="xformers")
    assert out.shape == reference.shape
    if out.numel():
        assert (out - reference).abs().max().item() <= 1e-5, case.describe()


@needs_xformers
@pytest.mark.parametrize(
    "mask,expected",
    [
        (MaskSpec.causal(), "LowerTriangularMask"),
        (MaskSpec.sliding_window(7, 0), "LowerTriangularFromBottomRightLocalAttentionMask"),
        (MaskSpec.sliding_window(3, 4), "LocalAttentionFromBottomRightMask"),
        (MaskSpec.block_diagonal([3, 5]).causal(), "BlockDiagonalCausalFromBottomRightMask"),
        (MaskSpec.key_padding([8]), "BlockDiagonalPaddedKeysMask"),
    ],
)
def test_native_classes_are_used(mask: MaskSpec, expected: str) -> None:
    from zoo.layers.attention.xformers_backend import native_bias

    assert has_native_bias(mask, None)
    attn_bias, _ = native_bias(mask, 1, 8, 8, torch.device("cpu"))
    assert type(attn_bias).__name__ == expected


def test_patterns_without_a_native_class_are_reported() -> None:
    assert not has_native_bias(MaskSpec.causal().key_padding([3]), None)
    assert not has_native_bias(MaskSpec.causal(), torch.zeros(1))


def _xformers_kernels_usable() -> str | None:
    if not torch.cuda.is_available():
        return "needs CUDA (xformers kernels run on NVIDIA GPUs only); none on this machine"
    if not HAVE_XFORMERS:
        return "xformers is not installed (optional extra: pip install 'tokenzoo[xformers]')"
    try:
        xops = importlib.import_module("xformers.ops")
        x = torch.randn(1, 8, 1, 16, device="cuda", dtype=torch.float16)
        xops.memory_efficient_attention(x, x, x)
    except Exception as error:  # a wheel built for another torch/CUDA imports but cannot run
        return f"xformers is installed but its CUDA kernels do not run here: {error}"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_xformers_kernels_match_math_on_cuda(kind: str, dtype: torch.dtype) -> None:
    reason = _xformers_kernels_usable()
    if reason is not None:
        pytest.skip(reason)
    case = make_case(kind, seed=0, dtype=dtype, with_bias=False)
    q, k, v = (x.cuda() for x in (case.q, case.k, case.v))
    reference = attention(q, k, v, case.mask, backend="math")
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    auto = attention(q, k, v, case.mask, backend="auto")  # xformers where it can, else SDPA, silently
    assert (auto.float() - reference.float()).abs().max().item() <= tolerance, case.describe()
    try:
        out = attention(q, k, v, case.mask, backend="xformers")
    except BackendError as error:  # e.g. fp32 sliding windows: only the flash kernels (fp16/bf16) take them
        pytest.skip(f"xformers has no kernel for {kind} in {dtype}: {error}")
    assert (out.float() - reference.float()).abs().max().item() <= tolerance, case.describe()

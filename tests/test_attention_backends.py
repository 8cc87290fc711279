"""Every backend agrees with `math` on random shapes, heads, dtypes, masks and biases; selection; errors."""

from __future__ import annotations

import pytest
import torch

from registry.errors import BackendError, InputError
from tests.attention_cases import MASK_KINDS, make_case
from zoo.layers.attention import (
    MaskSpec,
    attention,
    attention_backend,
    requested_backend,
    set_attention_backend,
)
from zoo.layers.attention import dispatch as attention_dispatch

SEEDS = range(6)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.0 if a.numel() == 0 else (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_sdpa_matches_math_fp32(kind: str, seed: int) -> None:
    case = make_case(kind, seed)
    reference = attention(case.q, case.k, case.v, case.mask, case.bias, backend="math")
    out = attention(case.q, case.k, case.v, case.mask, case.bias, backend="sdpa")
    assert out.shape == reference.shape == (*case.q.shape[:3], case.v.shape[-1])
    assert torch.isfinite(out).all(), case.describe()
    assert _max_diff(out, reference) <= 1e-5, case.describe()


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_sdpa_matches_math_bf16(kind: str) -> None:
    case = make_case(kind, seed=100, dtype=torch.bfloat16)
    reference = attention(case.q, case.k, case.v, case.mask, case.bias, backend="math")
    out = attention(case.q, case.k, case.v, case.mask, case.bias, backend="sdpa")
    assert out.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: outputs of size ~1 differ by a few units in the last place
    assert _max_diff(out, reference) <= 3e-2, case.describe()


@pytest.mark.parametrize("kind", ["causal_key_padding", "window_key_padding", "block_diagonal_causal_window"])
def test_sdpa_gradients_match_math_and_stay_finite(kind: str) -> None:
    case = make_case(kind, seed=3, with_bias=True)
    grads = {}
    for backend in ("math", "sdpa"):
        leaves = [x.detach().clone().requires_grad_(True) for x in (case.q, case.k, case.v, case.bias)]
        out = attention(*leaves[:3], case.mask, leaves[3], backend=backend)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads[backend] = [x.grad for x in leaves]
    for got, want in zip(grads["sdpa"], grads["math"], strict=True):
        assert torch.isfinite(got).all()
        assert _max_diff(got, want) <= 1e-4, case.describe()


def test_rows_without_keys_are_zero_on_every_cpu_backend() -> None:
    q, k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = MaskSpec.causal().key_padding([0, 5])
    for backend in ("math", "sdpa"):
        out = attention(q, k, v, mask, backend=backend)
        assert torch.equal(out[0], torch.zeros_like(out[0]))
        assert torch.isfinite(out).all()
    # bottom-right causal with more queries than keys: the first Lq - Lk queries see nothing
    out = attention(torch.randn(1, 1, 6, 8), k[:1, :1, :4], v[:1, :1, :4], MaskSpec.causal(), backend="sdpa")
    assert torch.equal(out[..., :2, :], torch.zeros(1, 1, 2, 8)) and out[..., 2:, :].abs().sum() > 0


def test_scale_and_dropout_arguments() -> None:
    case = make_case("causal", seed=1)
    for backend in ("math", "sdpa"):
        scaled = attention(case.q, case.k, case.v, case.mask, backend=backend, scale=0.3)
        manual = attention(
            case.q * (0.3 * case.q.shape[-1] ** 0.5), case.k, case.v, case.mask, backend=backend
        )
        assert _max_diff(scaled, manual) <= 1e-5
    torch.manual_seed(0)
    dropped = attention(case.q, case.k, case.v, case.mask, backend="sdpa", dropout_p=0.5)
    kept = attention(case.q, case.k, case.v, case.mask, backend="sdpa")
    assert _max_diff(dropped, kept) > 1e-3  # dropout really applies when asked for


def test_windowed_sdpa_never_builds_a_full_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked path must only ever hand SDPA masks a window wide, never (L, L)."""
    seen: list[tuple[int, ...]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append(tuple(attn_mask.shape) if attn_mask is not None else ())
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    length, left = 2048, 64
    x = torch.randn(1, 1, length, 8)
    attention(x, x, x, MaskSpec.sliding_window(left, 0), backend="sdpa")
    assert len(seen) > 1 and all(shape[-1] <= 2 * (left + 1) for shape in seen)


def test_causal_self_attention_uses_is_causal(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        calls.append(kwargs)
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    x = torch.randn(1, 2, 64, 8)
    attention(x, x, x, MaskSpec.causal(), backend="sdpa")
    assert len(calls) == 1 and calls[0]["is_causal"] and calls[0]["attn_mask"] is None


# --------------------------------------------------------------------------- selection
def test_selection_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZOO_ATTENTION", raising=False)
    assert requested_backend() == "auto"
    monkeypatch.setenv("ZOO_ATTENTION", "MATH")
    assert requested_backend() == "math"
    try:
        set_attention_backend("sdpa")
        assert requested_backend() == "sdpa"
        with attention_backend("math"):
            assert requested_backend() == "math"
            assert requested_backend("xformers") == "xformers"
        assert requested_backend() == "sdpa"
    finally:
        set_attention_backend(None)
    assert requested_backend() == "math"


def test_backend_choice_reaches_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    real_math, real_sdpa = attention_dispatch.math_attention, attention_dispatch.sdpa_attention
    monkeypatch.setattr(attention_dispatch, "math_attention", lambda *a: used.append("math") or real_math(*a))
    monkeypatch.setattr(attention_dispatch, "sdpa_attention", lambda *a: used.append("sdpa") or real_sdpa(*a))
    x = torch.randn(1, 1, 4, 8)
    monkeypatch.setenv("ZOO_ATTENTION", "math")
    attention(x, x, x)
    with attention_backend("sdpa"):
        attention(x, x, x)
    monkeypatch.setenv("ZOO_ATTENTION", "auto")
    attention(x, x, x)  # CPU tensors: auto falls back to SDPA without a word
    assert used == ["math", "sdpa", "sdpa"]


def test_unknown_backend_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(1, 1, 4, 8)
    with pytest.raises(BackendError, match="flash"):
        attention(x, x, x, backend="flash")
    with pytest.raises(BackendError):
        set_attention_backend("cuda")
    with pytest.raises(BackendError):
        with attention_backend("fast"):
            pass
    monkeypatch.setenv("ZOO_ATTENTION", "speedy")
    with pytest.raises(BackendError, match="ZOO_ATTENTION"):
        attention(x, x, x)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal; this machine has CUDA")
def test_xformers_without_cuda_is_a_clear_error() -> None:
    x = torch.randn(1, 1, 4, 8)
    with pytest.raises(BackendError, match="xformers"):
        attention(x, x, x, backend="xformers")


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "shapes,mask,bias_shape",
    [
        (((1, 2, 4, 8), (1, 2, 4, 16), (1, 2, 4, 16)), None, None),  # head dims differ
        (((1, 2, 4, 8), (1, 3, 4, 8), (1, 3, 4, 8)), None, None),  # heads differ
        (((1, 2, 4, 8), (1, 2, 5, 8), (1, 2, 4, 8)), None, None),  # k and v lengths differ
        (((2, 4, 8), (2, 4, 8), (2, 4, 8)), None, None),  # 3-D tensors
        (((1, 2, 6, 8),) * 3, MaskSpec.block_diagonal([2, 3]), None),
        (((1, 2, 6, 8),) * 3, MaskSpec.grid_window((2, 4), 2), None),
        (((2, 2, 6, 8),) * 3, MaskSpec.key_padding([6]), None),
        (((1, 2, 6, 8),) * 3, MaskSpec.causal(), (2, 6, 5)),  # bias does not broadcast
        (((1, 2, 8, 8),) * 3, MaskSpec.grid_window((2, 4), 2), (2, 3, 3)),
    ],
)
def test_bad_inputs_raise_input_error(shapes, mask, bias_shape) -> None:
    q, k, v = (torch.randn(*shape) for shape in shapes)
    bias = None if bias_shape is None else torch.randn(*bias_shape)
    for backend in ("math", "sdpa"):
        with pytest.raises(InputError):
            attention(q, k, v, mask, bias, backend=backend)


def test_other_bad_arguments() -> None:
    x = torch.randn(1, 1, 4, 8)
    with pytest.raises(InputError):
        attention(x, x, x, mask="causal")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        attention(x, x, x, dropout_p=1.5)
    with pytest.raises(InputError):
        attention(x.long(), x.long(), x.long())
    with pytest.raises(InputError):
        attention(x, x, x.double())

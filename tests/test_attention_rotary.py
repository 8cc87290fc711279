"""Rotary embeddings: the two pairings, upstream formulas (LLaMA rotate-half, OmniTokenizer's 2-D complex
table), relative-position invariance, partial rotation, and refusals."""

from __future__ import annotations

import pytest
import torch

from registry.errors import InputError
from zoo.layers.rotary import apply_rotary, grid_positions, rope_1d, rope_2d, rope_axial, rope_inv_freq


def test_inverse_frequencies_follow_theta_power() -> None:
    inv = rope_inv_freq(8, theta=100.0)
    assert torch.allclose(inv, torch.tensor([100.0 ** (-i / 8) for i in (0, 2, 4, 6)]))


def test_half_rotation_matches_llama_rotate_half() -> None:
    """Hugging Face LLaMA: q * cos(cat(f, f)) + rotate_half(q) * sin(cat(f, f))."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 16, generator=gen)
    cos, sin = rope_1d(10, 16, theta=500.0)
    angles = torch.arange(10).float()[:, None] * (1.0 / 500.0 ** (torch.arange(0, 16, 2).float() / 16))
    full = torch.cat((angles, angles), dim=-1)
    rotate_half = torch.cat((-x[..., 8:], x[..., :8]), dim=-1)
    expected = x * full.cos() + rotate_half * full.sin()
    assert torch.allclose(apply_rotary(x, cos, sin, interleaved=False), expected, atol=1e-6)


def test_interleaved_matches_complex_multiplication() -> None:
    """RoFormer / Meta LLaMA: view channel pairs as complex numbers and multiply by e^{i angle}."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 12, 8, generator=gen)
    cos, sin = rope_1d(12, 8)
    as_complex = torch.view_as_complex(x.reshape(4, 12, 4, 2))
    expected = torch.view_as_real(
        as_complex * torch.polar(torch.ones_like(cos), torch.atan2(sin, cos))
    ).flatten(-2)
    assert torch.allclose(apply_rotary(x, cos, sin, interleaved=True), expected, atol=1e-6)


def test_omnitokenizer_2d_table_matches_its_complex_formula() -> None:
    """OmniTokenizer: dim/4 frequencies theta^(-4i/dim); x = idx % W, y = idx // W; pairs alternate x, y."""
    side, dim, theta = 4, 16, 10000.0
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, side * side, 3, dim, generator=gen)  # upstream layout (B, N, H, D)
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    flat = torch.arange(side * side)
    x_cis = torch.polar(torch.ones(side * side, dim // 4), torch.outer(flat % side, freqs).float())
    y_cis = torch.polar(torch.ones(side * side, dim // 4), torch.outer(flat // side, freqs).float())
    cis = torch.stack((x_cis, y_cis), dim=-1).reshape(side * side, -1)
    expected = torch.view_as_real(
        torch.view_as_complex(x.reshape(2, side * side, 3, -1, 2)) * cis[:, None]
    ).flatten(3)
    cos, sin = rope_2d(side, side, dim, theta, order="xy", layout="interleaved")
    got = apply_rotary(x, cos[:, None], sin[:, None], interleaved=True)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("interleaved", [False, True])
def test_scores_depend_only_on_relative_position(interleaved: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
    cos, sin = rope_1d(20, 32)

    def score(p: int, m: int) -> float:
        qp = apply_rotary(q, cos[p], sin[p], interleaved)
        km = apply_rotary(k, cos[m], sin[m], interleaved)
        return float(qp @ km)

    assert score(5, 2) == pytest.approx(score(15, 12), abs=1e-4)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_partial_rotation_leaves_tail_channels_and_keeps_dtype() -> None:
    x = torch.randn(1, 2, 6, 12, dtype=torch.bfloat16)
    cos, sin = rope_1d(6, 8)
    out = apply_rotary(x, cos, sin, interleaved=False)
    assert out.dtype == torch.bfloat16 and torch.equal(out[..., 8:], x[..., 8:])
    pair_norm = x[..., :4].float() ** 2 + x[..., 4:8].float() ** 2
    assert torch.allclose(
        out[..., :4].float() ** 2 + out[..., 4:8].float() ** 2, pair_norm, rtol=3e-2, atol=3e-2
    )


def test_axial_layouts_and_uneven_axes() -> None:
    pos = grid_positions(2, 3, 4)
    assert pos.shape == (24, 3) and pos[5].tolist() == [0, 1, 1]
    cos, _ = rope_axial(pos, 24, axis_dims=(8, 8, 8), layout="split")
    t_only, _ = rope_1d(pos[:, 0], 8)
    assert torch.allclose(cos[:, :4], t_only)
    cos_i, _ = rope_axial(pos, 24, layout="interleaved")
    assert torch.allclose(cos_i[:, 0::3], t_only)
    cos_u, _ = rope_axial(pos, 20, axis_dims=(4, 8, 8))
    assert cos_u.shape == (24, 10)


def test_rope_2d_orders_rows_then_columns_by_default() -> None:
    cos, _ = rope_2d(3, 5, 8)
    rows, _ = rope_1d(torch.arange(15) // 5, 4)
    cols, _ = rope_1d(torch.arange(15) % 5, 4)
    assert torch.allclose(cos, torch.cat((rows, cols), dim=-1))


@pytest.mark.parametrize(
    "call",
    [
        lambda: rope_inv_freq(7),
        lambda: rope_1d(-1, 8),
        lambda: rope_axial(grid_positions(2, 2), 10),
        lambda: rope_axial(grid_positions(2, 2), 8, layout="spiral"),
        lambda: rope_axial(grid_positions(2, 2), 12, axis_dims=(4, 8), layout="interleaved"),
        lambda: rope_2d(2, 2, 8, order="zx"),
        lambda: apply_rotary(torch.randn(4, 6), *rope_1d(4, 8), interleaved=False),
        lambda: apply_rotary(torch.randn(4, 8), rope_1d(4, 8)[0], torch.zeros(4, 3), interleaved=True),
    ],
)
def test_bad_arguments_raise_input_error(call) -> None:
    with pytest.raises(InputError):
        call()

"""Relative position biases: Swin window index, ALiBi slopes and distances, log-spaced grid offsets."""

from __future__ import annotations

import math

import pytest
import torch

from registry.errors import InputError
from zoo.layers.attention import MaskSpec, attention
from zoo.layers.position_bias import (
    alibi_bias,
    alibi_slopes,
    relative_coordinates,
    window_bias,
    window_relative_index,
)


@pytest.mark.parametrize("window", [(2, 2), (3, 4), (1, 5)])
def test_window_index_matches_its_definition(window: tuple[int, int]) -> None:
    wh, ww = window
    index = window_relative_index(window)
    cells = [(y, x) for y in range(wh) for x in range(ww)]
    for i, (y1, x1) in enumerate(cells):
        for j, (y2, x2) in enumerate(cells):
            assert index[i, j] == (y1 - y2 + wh - 1) * (2 * ww - 1) + (x1 - x2 + ww - 1)
    assert int(index.max()) == (2 * wh - 1) * (2 * ww - 1) - 1


def test_window_bias_reads_the_table_per_head_and_feeds_attention() -> None:
    heads, window = 3, 2
    table = torch.randn((2 * window - 1) ** 2, heads)
    bias = window_bias(table, window)
    assert bias.shape == (heads, 4, 4)
    assert torch.equal(bias[1, 0, 3], table[window_relative_index(window)[0, 3], 1])
    x = torch.randn(1, heads, 16, 8)
    mask = MaskSpec.grid_window((4, 4), window)
    assert torch.allclose(
        attention(x, x, x, mask, bias, backend="sdpa"),
        attention(x, x, x, mask, bias, backend="math"),
        atol=1e-5,
    )
    with pytest.raises(InputError):
        window_bias(torch.randn(4, heads), window)


def test_alibi_slopes_follow_the_paper() -> None:
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    twelve = alibi_slopes(12)  # 8 slopes of the 8-head set, then every other one of the 16-head set
    sixteen = [2.0 ** -((i + 1) / 2) for i in range(16)]
    assert torch.allclose(twelve, torch.tensor([2.0 ** -(i + 1) for i in range(8)] + sixteen[0::2][:4]))
    with pytest.raises(InputError):
        alibi_slopes(0)


def test_alibi_bias_is_minus_slope_times_distance_bottom_right() -> None:
    slopes = alibi_slopes(2)
    bias = alibi_bias(slopes, 2, 5)
    assert bias.shape == (2, 2, 5)
    for h in range(2):
        for i in range(2):
            for j in range(5):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h].item() * abs(j - (i + 3)))


def test_relative_coordinates_and_log_scale() -> None:
    offsets = relative_coordinates(2, 3)
    assert offsets.shape == (6, 6, 2)
    assert offsets[5, 0].tolist() == [1.0, 2.0] and offsets[0, 5].tolist() == [-1.0, -2.0]
    logged = relative_coordinates(2, 3, log_scale=True)
    assert logged[5, 0].tolist() == pytest.approx([math.log(2), math.log(3)])

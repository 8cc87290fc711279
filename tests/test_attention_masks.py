"""MaskSpec semantics: dense masks checked entry by entry against the rules written out in Python."""

from __future__ import annotations

import itertools

import pytest
import torch

from registry.errors import InputError
from zoo.layers.attention import MaskSpec, time_merge, time_partition, window_merge, window_partition


def _rule_window(p: int, j: int, left: int | None, right: int | None) -> bool:
    return (left is None or j >= p - left) and (right is None or j <= p + right)


@pytest.mark.parametrize("lq,lk", [(6, 6), (3, 7), (7, 3), (1, 5)])
@pytest.mark.parametrize("left,right", [(None, None), (None, 0), (2, 0), (1, 2), (0, None), (0, 0)])
def test_sliding_window_is_bottom_right_aligned(
    lq: int, lk: int, left: int | None, right: int | None
) -> None:
    dense = MaskSpec.sliding_window(left, right).to_dense(lq, lk)
    assert dense.shape == (lq, lk) and dense.dtype == torch.bool
    for i, j in itertools.product(range(lq), range(lk)):
        assert bool(dense[i, j]) == _rule_window(i + lk - lq, j, left, right), (i, j)


def test_causal_equals_open_left_window_and_small_example() -> None:
    assert MaskSpec.causal() == MaskSpec.sliding_window(None, 0)
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)  # query 0 sits at key 2
    assert torch.equal(MaskSpec.causal().to_dense(2, 4), expected)


def test_key_padding_keeps_first_keys_per_row_and_combines_with_causal() -> None:
    spec = MaskSpec.causal().key_padding([2, 0, 4])
    dense = spec.to_dense(4, 4)
    assert dense.shape == (3, 1, 4, 4)
    causal = MaskSpec.causal().to_dense(4, 4)
    for b, n in enumerate([2, 0, 4]):
        keep = torch.arange(4) < n
        assert torch.equal(dense[b, 0], causal & keep[None, :])


def test_key_padding_accepts_a_tensor() -> None:
    lengths = torch.tensor([3, 1])
    dense = MaskSpec.key_padding(lengths).to_dense(2, 4)
    assert torch.equal(dense[:, 0, 0], torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool))


def test_block_diagonal_restarts_positions_per_block() -> None:
    q_blocks, kv_blocks = (2, 3, 1), (3, 3, 2)
    spec = MaskSpec.block_diagonal(q_blocks, kv_blocks).causal()
    dense = spec.to_dense(sum(q_blocks), sum(kv_blocks))
    q_start = [0, 2, 5]
    k_start = [0, 3, 6]
    for i, j in itertools.product(range(6), range(8)):
        bi = max(b for b in range(3) if q_start[b] <= i)
        bj = max(b for b in range(3) if k_start[b] <= j)
        pos = i - q_start[bi] + kv_blocks[bi] - q_blocks[bi]
        expected = bi == bj and _rule_window(pos, j - k_start[bj], None, 0)
        assert bool(dense[i, j]) == expected, (i, j)


def test_grid_window_matches_window_membership() -> None:
    grid, window = (2, 4, 6), (2, 3)
    dense = MaskSpec.grid_window(grid, window).to_dense(48, 48)
    coords = [(t, y, x) for t in range(2) for y in range(4) for x in range(6)]
    for (i, a), (j, b) in itertools.product(enumerate(coords), repeat=2):
        same = a[0] == b[0] and a[1] // 2 == b[1] // 2 and a[2] // 3 == b[2] // 3
        assert bool(dense[i, j]) == same


@pytest.mark.parametrize("causal", [True, False])
def test_temporal_attends_along_time_at_one_position(causal: bool) -> None:
    grid = (3, 2, 2)
    dense = MaskSpec.temporal(grid, causal=causal).to_dense(12, 12)
    for i, j in itertools.product(range(12), repeat=2):
        same_place = i % 4 == j % 4
        allowed = same_place and (not causal or j // 4 <= i // 4)
        assert bool(dense[i, j]) == allowed


def test_temporal_combines_with_a_time_window() -> None:
    spec = MaskSpec.temporal((5, 1, 1)).sliding_window(1, 0)
    assert torch.equal(spec.to_dense(5, 5), MaskSpec.sliding_window(1, 0).to_dense(5, 5))


def test_constructor_on_instance_combines_instead_of_replacing() -> None:
    spec = MaskSpec.causal().key_padding([3])
    assert spec.is_causal and spec.key_lengths == (3,)
    windowed = MaskSpec.sliding_window(4, 2) & MaskSpec.sliding_window(None, 1) & MaskSpec.causal()
    assert (windowed.left, windowed.right) == (4, 0)
    assert MaskSpec.causal().kind == "causal" and windowed.kind == "sliding_window"


@pytest.mark.parametrize(
    "build",
    [
        lambda: MaskSpec.block_diagonal([2, 2]).key_padding([1]),
        lambda: MaskSpec.grid_window((4, 4), 2).causal(),
        lambda: MaskSpec.temporal((2, 2, 2)).key_padding([1]),
        lambda: MaskSpec.key_padding([1]) & MaskSpec.key_padding([2]),
        lambda: MaskSpec.sliding_window(-1, 0),
        lambda: MaskSpec.grid_window((4, 6), 4),
        lambda: MaskSpec.block_diagonal([2, 0]),
        lambda: MaskSpec.block_diagonal([2, 2], [1]),
        lambda: MaskSpec.key_padding(torch.ones(2, 2, dtype=torch.long)),
    ],
)
def test_meaningless_specs_are_refused(build) -> None:
    with pytest.raises(InputError):
        build()


@pytest.mark.parametrize(
    "spec,batch,lq,lk",
    [
        (MaskSpec.block_diagonal([3, 4]), 1, 8, 8),
        (MaskSpec.grid_window((4, 4), 2), 1, 16, 12),
        (MaskSpec.key_padding([3, 4]), 3, 5, 5),
        (MaskSpec.key_padding([9]), 1, 5, 5),
    ],
)
def test_check_fits_rejects_shapes_the_spec_does_not_describe(
    spec: MaskSpec, batch: int, lq: int, lk: int
) -> None:
    with pytest.raises(InputError):
        spec.check_fits(batch, lq, lk)


@pytest.mark.parametrize(
    "spec,lq,lk",
    [
        (MaskSpec.causal(), 7, 3),
        (MaskSpec.sliding_window(1, 0).key_padding([0, 2, 5]), 5, 5),
        (MaskSpec.sliding_window(0, 2), 6, 2),
        (MaskSpec.block_diagonal([2, 3], [0, 4]).sliding_window(1, 0), 5, 4),
        (MaskSpec.full().key_padding([0, 3]), 4, 3),
        (MaskSpec.temporal((3, 2, 1)), 6, 6),
    ],
)
def test_rows_with_keys_agrees_with_the_dense_mask(spec: MaskSpec, lq: int, lk: int) -> None:
    batch = 1 if spec.key_lengths is None else len(spec.key_lengths)
    dense = spec.to_dense(lq, lk)
    dense = dense.expand(batch, 1, lq, lk) if dense.dim() == 4 else dense.expand(1, 1, lq, lk)
    rows = spec.rows_with_keys(batch, lq, lk)
    assert torch.equal(rows.expand(batch, 1, lq, 1), dense.any(dim=-1, keepdim=True))


def test_window_partition_matches_upstream_reshape_and_inverts() -> None:
    """OmniTokenizer views (B, H, W, C) as (B, H/ws, ws, W/ws, ws, C) and moves the windows to the batch."""
    batch, height, width, channels, ws = 2, 4, 8, 3, 2
    tokens = torch.randn(batch, height * width, channels)
    upstream = (
        tokens.view(batch, height // ws, ws, width // ws, ws, channels)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(-1, ws * ws, channels)
    )
    ours = window_partition(tokens, (height, width), (ws, ws))
    assert torch.equal(ours, upstream)
    assert torch.equal(window_merge(ours, (height, width), (ws, ws)), tokens)


def test_window_partition_keeps_middle_axes_and_frames() -> None:
    x = torch.randn(2, 3, 2 * 4 * 6, 5)  # (B, heads, T*H*W, D)
    parts = window_partition(x, (2, 4, 6), (2, 3))
    assert parts.shape == (2 * 2 * 2 * 2, 3, 6, 5)
    assert torch.equal(window_merge(parts, (2, 4, 6), (2, 3)), x)
    # first window of the second frame of batch 0: rows 0-1, columns 0-2 of frame 1
    frame1 = x[0, :, 24:48].reshape(3, 4, 6, 5)
    assert torch.equal(parts[4], frame1[:, :2, :3].reshape(3, 6, 5))


def test_time_partition_matches_b_t_h_w_to_bhw_t() -> None:
    batch, frames, height, width, channels = 2, 3, 2, 4, 5
    video = torch.randn(batch, frames, height, width, channels)
    tokens = video.reshape(batch, frames * height * width, channels)
    upstream = video.permute(0, 2, 3, 1, 4).reshape(batch * height * width, frames, channels)
    lines = time_partition(tokens, (frames, height, width))
    assert torch.equal(lines, upstream)
    assert torch.equal(time_merge(lines, (frames, height, width)), tokens)

"""Random attention problems (shapes, heads, masks, biases) shared by the attention backend tests."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from zoo.layers.attention import MaskSpec

MASK_KINDS = (
    "full",
    "causal",
    "causal_cross",
    "sliding_window",
    "causal_window",
    "block_diagonal",
    "block_diagonal_causal",
    "block_diagonal_causal_window",
    "key_padding",
    "causal_key_padding",
    "window_key_padding",
    "key_padding_tensor",
    "grid_window",
    "temporal_causal",
    "temporal_full",
    "temporal_window",
)


@dataclass
class Case:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: MaskSpec
    bias: torch.Tensor | None

    def describe(self) -> str:
        bias = None if self.bias is None else tuple(self.bias.shape)
        return f"q{tuple(self.q.shape)} k{tuple(self.k.shape)} v{tuple(self.v.shape)} {self.mask} bias={bias}"


def _lengths(rng: random.Random, total: int, parts: int, allow_zero: bool) -> list[int]:
    low = 0 if allow_zero else 1
    cuts = sorted(rng.randint(low, total) for _ in range(parts - 1))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    if not allow_zero and any(s == 0 for s in sizes):
        return [total] if parts == 1 else [1] * (parts - 1) + [total - parts + 1]
    return sizes


def make_case(
    kind: str, seed: int, dtype: torch.dtype = torch.float32, with_bias: bool | None = None
) -> Case:
    """A reproducible random problem of the given mask kind (small enough for the math reference)."""
    rng = random.Random(f"{kind}-{seed}")
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    batch, heads = rng.randint(1, 3), rng.randint(1, 4)
    head_dim = rng.choice([8, 16, 24, 32])
    value_dim = head_dim if rng.random() < 0.7 else rng.choice([8, 40])
    lq = rng.randint(1, 70)
    lk = lq
    mask: MaskSpec
    local = None
    if kind == "full":
        lk = rng.randint(1, 70)
        mask = MaskSpec.full()
    elif kind == "causal":
        mask = MaskSpec.causal()
    elif kind == "causal_cross":
        lk = rng.randint(1, 70)
        mask = MaskSpec.causal()
    elif kind == "sliding_window":
        lk = rng.choice([lq, rng.randint(1, 70)])
        mask = MaskSpec.sliding_window(rng.choice([None, 0, 3, 17]), rng.choice([None, 0, 2, 9]))
    elif kind == "causal_window":
        mask = MaskSpec.sliding_window(rng.randint(0, 20), 0)
    elif kind.startswith("block_diagonal"):
        parts = rng.randint(1, 4)
        lq = max(lq, parts)
        q_blocks = _lengths(rng, lq, parts, allow_zero=False)
        kv_blocks = q_blocks if rng.random() < 0.5 else [rng.randint(0, 20) for _ in q_blocks]
        lk = sum(kv_blocks)
        mask = MaskSpec.block_diagonal(q_blocks, kv_blocks)
        if kind == "block_diagonal_causal":
            mask = mask.causal()
        elif kind == "block_diagonal_causal_window":
            mask = mask.sliding_window(rng.randint(0, 6), 0)
    elif "key_padding" in kind:
        lk = rng.choice([lq, rng.randint(1, 70)])
        lengths = [rng.randint(0, lk) for _ in range(batch)]
        mask = MaskSpec.key_padding(torch.tensor(lengths) if kind == "key_padding_tensor" else lengths)
        if kind == "causal_key_padding":
            mask = mask.causal()
        elif kind == "window_key_padding":
            mask = mask.sliding_window(rng.randint(0, 12), rng.choice([0, 3, None]))
    elif kind == "grid_window":
        wh, ww = rng.randint(1, 3), rng.randint(1, 3)
        grid = (rng.randint(1, 2), wh * rng.randint(1, 3), ww * rng.randint(1, 3))
        lq = lk = grid[0] * grid[1] * grid[2]
        mask = MaskSpec.grid_window(grid, (wh, ww))
        local = wh * ww
    elif kind.startswith("temporal"):
        grid = (rng.randint(1, 5), rng.randint(1, 3), rng.randint(1, 3))
        lq = lk = grid[0] * grid[1] * grid[2]
        mask = MaskSpec.temporal(grid, causal=kind != "temporal_full")
        if kind == "temporal_window":
            mask = mask.sliding_window(rng.randint(0, 2), 0)
        local = grid[0]
    else:
        raise ValueError(kind)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    q, k, v = (
        rand(batch, heads, lq, head_dim),
        rand(batch, heads, lk, head_dim),
        rand(batch, heads, lk, value_dim),
    )
    use_bias = rng.random() < 0.5 if with_bias is None else with_bias
    bias = None
    if use_bias:
        if local is not None and rng.random() < 0.7:
            shape = [rng.choice([1, batch]), rng.choice([1, heads]), local, local]
        else:
            shape = [rng.choice([1, batch]), rng.choice([1, heads]), rng.choice([1, lq]), lk]
        bias = torch.randn(*shape[rng.randint(0, 1) :], generator=gen)
    return Case(q, k, v, mask, bias)

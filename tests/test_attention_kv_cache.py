"""`KVCache`: chunk-by-chunk causal attention equals the one-shot pass for any chunking, memory stays bounded."""

from __future__ import annotations

import pytest
import torch

from registry.errors import InputError
from zoo.layers.attention import KVCache, MaskSpec, attention


def qkv(length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, length, 8, generator=g) for _ in range(3))  # type: ignore[return-value]


@pytest.mark.parametrize("window", [None, 1, 5, 16])
@pytest.mark.parametrize("chunk", [1, 3, 7, 40])
def test_chunked_equals_one_shot(window: int | None, chunk: int) -> None:
    q, k, v = qkv(40, 0)
    mask = MaskSpec.causal() if window is None else MaskSpec.sliding_window(window, 0)
    whole = attention(q, k, v, mask=mask, backend="math")
    cache = KVCache(keep=window)
    parts = []
    for start in range(0, 40, chunk):
        assert cache.offset == start
        k_all, v_all = cache.extend(k[..., start : start + chunk, :], v[..., start : start + chunk, :])
        parts.append(attention(q[..., start : start + chunk, :], k_all, v_all, mask=mask))
        assert len(cache) <= (start + chunk if window is None else window)
    assert torch.allclose(torch.cat(parts, dim=-2), whole, atol=1e-5)


def test_keep_zero_and_reset() -> None:
    _, k, v = qkv(4, 1)
    cache = KVCache(keep=0)
    keys, values = cache.extend(k, v)
    assert torch.equal(keys, k) and torch.equal(values, v) and len(cache) == 0 and cache.offset == 4
    cache = KVCache(keep=2)
    cache.extend(k, v)
    assert torch.equal(cache.keys, k[..., 2:, :])
    cache.reset()
    assert len(cache) == 0 and cache.offset == 0


def test_bad_use() -> None:
    with pytest.raises(InputError, match="keep"):
        KVCache(keep=-1)
    with pytest.raises(InputError, match="keep"):
        KVCache(keep=True)  # type: ignore[arg-type]
    cache = KVCache(keep=4)
    _, k, v = qkv(3, 2)
    with pytest.raises(InputError, match=r"\(B, H, L, D\)"):
        cache.extend(k[0], v[0])
    cache.extend(k, v)
    with pytest.raises(InputError, match="reset"):
        cache.extend(k[:1], v[:1])

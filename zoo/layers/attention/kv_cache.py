"""`KVCache`: keys and values of past positions, for causal attention computed chunk by chunk.

Streaming a causal (or causal sliding-window) layer means each new chunk of queries attends to the
keys of earlier chunks as well as its own. `extend` returns the cached keys/values followed by the
chunk's, which lines up with `MaskSpec`'s bottom-right alignment (query `i` of the chunk sits at key
position `i + Lk - Lq`), so the same `MaskSpec.causal()` or `MaskSpec.sliding_window(w, 0)` that the
one-shot pass uses gives the same result. With a window of `w` past keys, keeping `keep=w` keys is
enough for any chunk size (unlike a ring buffer of the window's size, which loses keys a chunk's first
queries still need).

    cache = KVCache(keep=window)
    for chunk in chunks:
        q, k, v = project(chunk)                      # (B, H, L, D), rotary at offset cache.offset
        k_all, v_all = cache.extend(k, v)
        out = attention(q, k_all, v_all, mask=MaskSpec.sliding_window(window, 0))
"""

from __future__ import annotations

import torch
from torch import Tensor

from registry.errors import InputError


class KVCache:
    """Past keys/values of one attention layer, `(B, H, L, D)`, trimmed to the last `keep` positions."""

    def __init__(self, keep: int | None = None) -> None:
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise InputError(f"KVCache: expected `keep` as an int >= 0 or None (keep all), got {keep!r}.")
        self.keep = keep
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self.offset = 0  # positions seen so far: the absolute position of the next chunk's first query

    def __len__(self) -> int:
        return 0 if self.keys is None else int(self.keys.shape[-2])

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Cached keys/values followed by the chunk's `k`, `v`; the cache then keeps the last `keep`."""
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise InputError(
                f"KVCache.extend: expected k (B, H, L, D) and v (B, H, L, Dv) of the same B, H, L, got "
                f"{tuple(k.shape)} and {tuple(v.shape)}."
            )
        if self.keys is not None and (self.keys.shape[:2] != k.shape[:2] or self.keys.shape[-1] != k.shape[-1]):
            raise InputError(
                f"KVCache.extend: the chunk's keys {tuple(k.shape)} do not continue the cached "
                f"{tuple(self.keys.shape)} (batch, heads and head_dim must stay the same); call reset() "
                "to start a new stream."
            )
        keys = k if self.keys is None else torch.cat((self.keys, k), dim=-2)
        values = v if self.values is None else torch.cat((self.values, v), dim=-2)
        self.offset += int(k.shape[-2])
        if self.keep is None:
            self.keys, self.values = keys, values
        elif self.keep == 0:
            self.keys = self.values = None
        else:
            self.keys, self.values = keys[..., -self.keep :, :], values[..., -self.keep :, :]
        return keys, values

    def reset(self) -> None:
        self.keys = self.values = None
        self.offset = 0

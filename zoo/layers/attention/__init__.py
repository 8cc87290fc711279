"""The shared attention backend: one `attention()` call, one `MaskSpec`, three interchangeable backends.

    from zoo.layers.attention import MaskSpec, attention
    out = attention(q, k, v, mask=MaskSpec.causal())                 # (B, H, L, D) in, (B, H, L, D) out
    out = attention(q, k, v, mask=MaskSpec.sliding_window(128, 0).key_padding(lengths))
    with attention_backend("math"):                                  # the reference, for checks
        ...
    cache = KVCache(keep=window)                                     # chunk-by-chunk causal attention
    k_all, v_all = cache.extend(k, v)                                # then attention(q, k_all, v_all, ...)

Backends: `math` (explicit softmax, the reference), `sdpa` (PyTorch SDPA without O(L^2) masks where the
pattern allows; exports to ONNX), `xformers` (optional extra, CUDA), `auto` (xformers on CUDA when
installed and the mask suits it, else SDPA). Choose with the `backend=` argument, `attention_backend()`,
`set_attention_backend()` or the `ZOO_ATTENTION` environment variable.
"""

from zoo.layers.attention.dispatch import attention
from zoo.layers.attention.grid import time_merge, time_partition, window_merge, window_partition
from zoo.layers.attention.kv_cache import KVCache
from zoo.layers.attention.masks import MaskSpec
from zoo.layers.attention.select import (
    BACKENDS,
    ENV_VAR,
    attention_backend,
    requested_backend,
    set_attention_backend,
)

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "KVCache",
    "MaskSpec",
    "attention",
    "attention_backend",
    "requested_backend",
    "set_attention_backend",
    "time_merge",
    "time_partition",
    "window_merge",
    "window_partition",
]

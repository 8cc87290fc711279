"""`MaskSpec`: one immutable description of which keys each query may see.

Every backend translates the same description: `math` materialises it (`to_dense`), `sdpa` turns it into
`is_causal`, chunked bands or partitioned batches, and `xformers` into its `attn_bias` classes. Keeping the
description symbolic is what lets the fast paths avoid an O(L^2) mask.

Conventions (the same everywhere):

* Positions are aligned bottom-right: query `i` of `Lq` sits at key position `p = i + (Lk - Lq)`, so the
  last query lines up with the last key (a KV cache); with `Lq == Lk` this is plain self-attention.
* A sliding window lets query `p` see keys `j` with `p - left <= j <= p + right`; `None` is unbounded.
  `causal()` is `left=None, right=0`; a causal window of `w` past keys is `left=w, right=0`.
* Block diagonal packs several sequences along the length axis; positions restart in each block and
  the window rule (causal, say) applies inside each block, bottom-right aligned per block.
* Key padding keeps, per batch row, the first `lengths[b]` keys. It does not move positions.
* Grid patterns describe tokens flattened from a `(T, H, W)` grid in `t, h, w` order: `grid_window`
  attends within non-overlapping `(wh, ww)` windows of one frame (OmniTokenizer's window blocks) and
  `temporal` attends along time at one spatial position (its temporal blocks), causally by default.

Kinds combine with `&` where the result is meaningful (causal & key padding, window & key padding,
block diagonal & causal, temporal & window along time). Constructors called on an existing spec combine
with it, so `MaskSpec.causal().key_padding(lengths)` is causal *and* padded, never silently one of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from registry.errors import InputError

Lengths = tuple[int, ...] | Tensor


class _Constructor:
    """Classmethod-like constructor that, called on an instance, returns `instance & new`."""

    def __init__(self, build: Callable[..., MaskSpec]) -> None:
        self._build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

    def __get__(self, instance: MaskSpec | None, owner: type[MaskSpec]) -> Callable[..., MaskSpec]:
        build = self._build

        @functools.wraps(build)
        def make(*args: Any, **kwargs: Any) -> MaskSpec:
            made = build(owner, *args, **kwargs)
            return made if instance is None else instance & made

        return make


def _is_int(value: object) -> bool:
    """An int, or a symbolic int while tracing for export; never a bool."""
    return isinstance(value, int | torch.SymInt) and not isinstance(value, bool)


def _check_width(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise InputError(
            f"sliding_window: expected `{name}` to be a non-negative int or None (unbounded), got "
            f"{value!r}; pass e.g. left=256, right=0 for a causal window of 256 past keys."
        )
    return value


def _check_lengths(what: str, lengths: Sequence[int], allow_zero: bool) -> tuple[int, ...]:
    values = tuple(lengths)
    low = 0 if allow_zero else 1
    if not values or any(isinstance(n, bool) or not isinstance(n, int) or n < low for n in values):
        raise InputError(
            f"{what}: expected a non-empty sequence of ints >= {low}, got {lengths!r}; pass one length "
            "per sequence, e.g. [5, 3, 8]."
        )
    return values


def _as_int_tuple(name: str, value: int | Sequence[int], size: int) -> tuple[int, ...]:
    values = (value,) * size if _is_int(value) else tuple(value)  # type: ignore[arg-type]
    if len(values) != size or any(not _is_int(n) or n < 1 for n in values):
        raise InputError(f"expected `{name}` to be {size} positive ints, got {value!r}.")
    return values


def _normalise_grid(grid: Sequence[int], allowed: tuple[int, ...], what: str) -> tuple[int, int, int]:
    dims = tuple(grid)
    if len(dims) not in allowed or any(not _is_int(n) or n < 1 for n in dims):
        raise InputError(
            f"{what}: expected `grid` as {' or '.join(f'{n} positive ints' for n in allowed)} "
            f"(the token grid, flattened t-h-w), got {grid!r}."
        )
    if len(dims) == 2:
        return (1, dims[0], dims[1]) if what == "grid_window" else (dims[0], dims[1], 1)
    return dims  # type: ignore[return-value]


def window_allows(pos: Tensor, key: Tensor, left: int | None, right: int | None) -> Tensor:
    """Whether key index `key` lies in the window of query position `pos` (broadcasting)."""
    allowed = torch.ones(torch.broadcast_shapes(pos.shape, key.shape), dtype=torch.bool, device=pos.device)
    if left is not None:
        allowed = allowed & (key >= pos - left)
    if right is not None:
        allowed = allowed & (key <= pos + right)
    return allowed


@dataclass(frozen=True, eq=False)
class MaskSpec:
    """Which keys each query may attend to; build it with the constructors, not the fields."""

    left: int | None = None
    right: int | None = None
    key_lengths: Lengths | None = None
    q_blocks: tuple[int, ...] | None = None
    kv_blocks: tuple[int, ...] | None = None
    grid: tuple[int, int, int] | None = None
    window: tuple[int, int] | None = None

    # ----------------------------------------------------------------- constructors
    @_Constructor
    def full(cls) -> MaskSpec:
        """Every query sees every key."""
        return cls()

    @_Constructor
    def causal(cls) -> MaskSpec:
        """Query `p` sees keys `j <= p` (bottom-right aligned when `Lq != Lk`)."""
        return cls(left=None, right=0)

    @_Constructor
    def sliding_window(cls, left: int | None, right: int | None) -> MaskSpec:
        """Query `p` sees keys `p - left .. p + right` (inclusive); `None` leaves that side open."""
        return cls(left=_check_width("left", left), right=_check_width("right", right))

    @_Constructor
    def block_diagonal(cls, lengths: Sequence[int], kv_lengths: Sequence[int] | None = None) -> MaskSpec:
        """Sequences packed along the length axis; each query block sees only its own key block."""
        q_blocks = _check_lengths("block_diagonal lengths", lengths, allow_zero=False)
        kv_blocks = (
            q_blocks
            if kv_lengths is None
            else _check_lengths("block_diagonal kv_lengths", kv_lengths, allow_zero=True)
        )
        if len(kv_blocks) != len(q_blocks):
            raise InputError(
                f"block_diagonal: expected as many key blocks as query blocks, got {len(q_blocks)} query "
                f"lengths {q_blocks} and {len(kv_blocks)} key lengths {kv_blocks}."
            )
        return cls(q_blocks=q_blocks, kv_blocks=kv_blocks)

    @_Constructor
    def key_padding(cls, lengths: Sequence[int] | Tensor) -> MaskSpec:
        """Per batch row, only the first `lengths[b]` keys are real (a tensor stays a graph input)."""
        if isinstance(lengths, Tensor):
            if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
                raise InputError(
                    "key_padding: expected a 1-D integer tensor of per-batch key lengths, got "
                    f"shape {tuple(lengths.shape)} dtype {lengths.dtype}."
                )
            return cls(key_lengths=lengths)
        return cls(key_lengths=_check_lengths("key_padding lengths", lengths, allow_zero=True))

    @_Constructor
    def grid_window(cls, grid: Sequence[int], window: int | Sequence[int]) -> MaskSpec:
        """Attention inside non-overlapping `(wh, ww)` windows of each frame of a `(T,) H, W` grid."""
        dims = _normalise_grid(grid, (2, 3), "grid_window")
        wh, ww = _as_int_tuple("window", window, 2)
        if dims[1] % wh or dims[2] % ww:
            raise InputError(
                f"grid_window: the grid {dims[1]}x{dims[2]} does not split into {wh}x{ww} windows; pad the "
                "token grid to a multiple of the window (upstream OmniTokenizer requires the same)."
            )
        return cls(grid=dims, window=(wh, ww))

    @_Constructor
    def temporal(cls, grid: Sequence[int], causal: bool = True) -> MaskSpec:
        """Attention along time at each spatial position of a `(T, H, W)` (or `(T, S)`) grid."""
        dims = _normalise_grid(grid, (2, 3), "temporal")
        return cls(grid=dims, left=None, right=0 if causal else None)

    # ----------------------------------------------------------------- combination
    def __and__(self, other: MaskSpec) -> MaskSpec:
        if not isinstance(other, MaskSpec):
            return NotImplemented
        merged = MaskSpec(
            left=_tighter(self.left, other.left),
            right=_tighter(self.right, other.right),
            key_lengths=_same_or_one("key padding", self.key_lengths, other.key_lengths),
            q_blocks=_same_or_one("block_diagonal", self.q_blocks, other.q_blocks),
            kv_blocks=_same_or_one("block_diagonal", self.kv_blocks, other.kv_blocks),
            grid=_same_or_one("grid", self.grid, other.grid),
            window=_same_or_one("grid window", self.window, other.window),
        )
        merged._check_combination()
        return merged

    def _check_combination(self) -> None:
        problems = []
        if self.q_blocks is not None and self.key_lengths is not None:
            problems.append("block_diagonal with key_padding (give the real lengths as blocks instead)")
        if self.grid is not None and (self.q_blocks is not None or self.key_lengths is not None):
            problems.append("a grid pattern with block_diagonal or key_padding")
        if self.window is not None and (self.left is not None or self.right is not None):
            problems.append("grid_window with causal or sliding_window")
        if problems:
            raise InputError(
                f"MaskSpec cannot combine {'; '.join(problems)}. Supported combinations: causal or "
                "sliding_window with key_padding or block_diagonal, and temporal with sliding_window."
            )

    # ----------------------------------------------------------------- reading
    @property
    def kind(self) -> str:
        """A short name for messages and tests: the structural pattern, ignoring key padding."""
        if self.window is not None:
            return "grid_window"
        if self.grid is not None:
            return "temporal"
        if self.q_blocks is not None:
            return "block_diagonal"
        if self.left is None and self.right is None:
            return "full"
        if self.left is None and self.right == 0:
            return "causal"
        return "sliding_window"

    @property
    def is_causal(self) -> bool:
        return self.left is None and self.right == 0

    @property
    def banded(self) -> bool:
        """Whether a window rule (causal or sliding) applies along the 1-D positions."""
        return self.left is not None or self.right is not None

    def with_window(self, left: int | None, right: int | None) -> MaskSpec:
        """The same spec with its 1-D window replaced (used when a backend partitions a grid)."""
        return replace(self, left=left, right=right)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaskSpec) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple:
        lengths = self.key_lengths
        key = ("tensor", id(lengths)) if isinstance(lengths, Tensor) else lengths
        return (self.left, self.right, key, self.q_blocks, self.kv_blocks, self.grid, self.window)

    # ----------------------------------------------------------------- checks
    def check_fits(self, batch: int, lq: int, lk: int) -> None:
        """Raise `InputError` unless this spec describes a `(batch, *, lq, lk)` attention."""
        if self.q_blocks is not None:
            assert self.kv_blocks is not None
            if sum(self.q_blocks) != lq or sum(self.kv_blocks) != lk:
                raise InputError(
                    f"block_diagonal mask does not fit: its query blocks sum to {sum(self.q_blocks)} and key "
                    f"blocks to {sum(self.kv_blocks)}, but the queries have length {lq} and the keys {lk}; "
                    "build the spec from the lengths of the sequences you packed."
                )
        if self.grid is not None:
            tokens = self.grid[0] * self.grid[1] * self.grid[2]
            if lq != tokens or lk != tokens:
                raise InputError(
                    f"{self.kind} mask does not fit: its grid {self.grid} has {tokens} tokens, but the "
                    f"queries have length {lq} and the keys {lk}; flatten (T, H, W) tokens in t-h-w order."
                )
        lengths = self.key_lengths
        if lengths is not None:
            count = lengths.shape[0] if isinstance(lengths, Tensor) else len(lengths)
            if count != batch:
                raise InputError(
                    f"key_padding mask does not fit: expected {batch} lengths (one per batch row), "
                    f"got {count}."
                )
            if not isinstance(lengths, Tensor) and max(lengths) > lk:
                raise InputError(
                    f"key_padding mask does not fit: a length of {max(lengths)} exceeds the {lk} keys given."
                )

    # ----------------------------------------------------------------- materialising
    def to_dense(self, lq: int, lk: int, device: torch.device | str | None = None) -> Tensor:
        """The boolean mask (True = may attend): `(Lq, Lk)`, or `(B, 1, Lq, Lk)` with key padding."""
        q_idx = torch.arange(lq, device=device)
        k_idx = torch.arange(lk, device=device)
        if self.q_blocks is not None:
            allowed = self._dense_blocks(q_idx, k_idx)
        elif self.grid is not None:
            if lq != lk:
                raise InputError(f"{self.kind} mask needs as many queries as keys, got {lq} and {lk}.")
            allowed = self._dense_grid(q_idx)
        else:
            allowed = window_allows(q_idx[:, None] + (lk - lq), k_idx[None, :], self.left, self.right)
        if self.key_lengths is not None:
            lengths = self.lengths_tensor(device)
            allowed = allowed & (k_idx[None, None, None, :] < lengths[:, None, None, None])
        return allowed

    def lengths_tensor(self, device: torch.device | str | None = None) -> Tensor:
        """The key lengths as a 1-D int64 tensor on `device`."""
        lengths = self.key_lengths
        if lengths is None:
            raise InputError(
                "this MaskSpec has no key padding; build one with MaskSpec.key_padding(lengths)."
            )
        if isinstance(lengths, Tensor):
            return lengths.to(device=device, dtype=torch.long)
        return torch.tensor(lengths, dtype=torch.long, device=device)

    def _dense_blocks(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        assert self.q_blocks is not None and self.kv_blocks is not None
        device = q_idx.device
        q_sizes = torch.tensor(self.q_blocks, device=device)
        kv_sizes = torch.tensor(self.kv_blocks, device=device)
        blocks = torch.arange(len(self.q_blocks), device=device)
        q_block = torch.repeat_interleave(blocks, q_sizes)
        k_block = torch.repeat_interleave(blocks, kv_sizes)
        q_local = q_idx - (torch.cumsum(q_sizes, 0) - q_sizes)[q_block]
        k_local = k_idx - (torch.cumsum(kv_sizes, 0) - kv_sizes)[k_block]
        q_pos = q_local + (kv_sizes - q_sizes)[q_block]
        same = q_block[:, None] == k_block[None, :]
        return same & window_allows(q_pos[:, None], k_local[None, :], self.left, self.right)

    def _dense_grid(self, idx: Tensor) -> Tensor:
        assert self.grid is not None
        _, height, width = self.grid
        t, y, x = idx // (height * width), (idx // width) % height, idx % width
        if self.window is not None:
            wh, ww = self.window
            cell = (t * (height // wh) + y // wh) * (width // ww) + x // ww
            return cell[:, None] == cell[None, :]
        spatial = idx % (height * width)
        same = spatial[:, None] == spatial[None, :]
        return same & window_allows(t[:, None], t[None, :], self.left, self.right)

    def rows_with_keys(
        self, batch: int, lq: int, lk: int, device: torch.device | str | None = None
    ) -> Tensor:
        """`(B or 1, 1, Lq, 1)` bool: which query rows see at least one key (others output zeros)."""
        q_idx = torch.arange(lq, device=device)
        if self.grid is not None:
            return torch.ones(1, 1, lq, 1, dtype=torch.bool, device=device)  # every token sees itself
        if self.q_blocks is not None:
            assert self.kv_blocks is not None
            q_sizes = torch.tensor(self.q_blocks, device=device)
            kv_sizes = torch.tensor(self.kv_blocks, device=device)
            q_block = torch.repeat_interleave(torch.arange(len(self.q_blocks), device=device), q_sizes)
            pos = q_idx - (torch.cumsum(q_sizes, 0) - q_sizes)[q_block] + (kv_sizes - q_sizes)[q_block]
            limit = kv_sizes[q_block]
            return self._band_nonempty(pos, limit)[None, None, :, None]
        pos = q_idx + (lk - lq)
        if self.key_lengths is None:
            limit = torch.full_like(pos, lk)
            return self._band_nonempty(pos, limit)[None, None, :, None]
        limit = torch.clamp(self.lengths_tensor(device), max=lk)[:, None]
        return self._band_nonempty(pos[None, :], limit)[:, None, :, None]

    def _band_nonempty(self, pos: Tensor, limit: Tensor) -> Tensor:
        """Whether `[pos - left, pos + right]` meets `[0, limit)`."""
        low = torch.zeros_like(pos) if self.left is None else torch.clamp(pos - self.left, min=0)
        high = limit - 1 if self.right is None else torch.minimum(pos + self.right, limit - 1)
        return low <= high


def _tighter(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _same_or_one(what: str, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None or a is b:
        return a
    if isinstance(a, Tensor) or isinstance(b, Tensor) or a != b:
        raise InputError(
            f"MaskSpec: cannot combine two different {what} descriptions ({a!r} and {b!r}); give it once."
        )
    return a


FULL = MaskSpec()

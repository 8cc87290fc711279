"""`NumpyTokens`: `zoo.Tokens` with numpy arrays, for the onnxruntime tokenizer (no torch needed).

Same fields, id layout, `to_sequence` offsets and safetensors file format as `zoo.tokens.Tokens`
(see that module's docstring), so files written by either load in the other; `to_torch()` and
`from_torch()` convert when torch is installed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import InputError, MediaError

TOKENS_FORMAT = "tokenzoo.tokens/1"  # the format string of zoo.tokens (kept equal by a test)
_ARRAYS = ("ids", "latent", "lengths", "original_size")


def as_numpy(value: Any) -> np.ndarray | None:
    """A numpy array from an array, a list or a torch tensor (without importing torch)."""
    if value is None:
        return None
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


@dataclass
class NumpyTokens:
    """Token ids (or a latent) plus what is needed to decode and to read them; numpy arrays."""

    ids: np.ndarray | None
    modality: str
    codebook_sizes: tuple[int, ...] = ()
    grid: tuple[int, ...] = ()
    latent: np.ndarray | None = None
    lengths: np.ndarray | None = None
    original_size: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    producer: str = ""
    version: str = ""

    # -- shape helpers -------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        data = self.ids if self.ids is not None else self.latent
        if data is None:
            raise InputError("these tokens hold neither ids nor a latent; nothing to read")
        return int(data.shape[0])

    @property
    def num_codebooks(self) -> int:
        return max(len(self.codebook_sizes), 1)

    @property
    def multi_codebook(self) -> bool:
        return self.ids is not None and self.ids.ndim == len(self.grid) + 2

    @property
    def offsets(self) -> list[int]:
        out, acc = [], 0
        for size in self.codebook_sizes:
            out.append(acc)
            acc += int(size)
        return out

    @property
    def vocab_size(self) -> int:
        return int(sum(self.codebook_sizes))

    def replace(self, **changes: Any) -> NumpyTokens:
        return replace(self, **changes)

    def item(self, index: int) -> NumpyTokens:
        """One batch item (batch size 1), trimmed to its own length when lengths are set."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index : index + 1]

        ids, latent, grid = pick(self.ids), pick(self.latent), self.grid
        if self.lengths is not None:
            n = int(self.lengths[index])
            ids = None if ids is None else ids[:, :n]
            latent = None if latent is None else latent[:, :n]
            grid = (n, *self.grid[1:])
        return self.replace(ids=ids, latent=latent, grid=grid, lengths=pick(self.lengths),
                            original_size=pick(self.original_size),
                            extras={k: v[index : index + 1] for k, v in self.extras.items()})

    # -- language-model sequence -----------------------------------------------------------------
    def to_sequence(self) -> np.ndarray:
        """(B, L) int64, codebook q shifted by `offsets[q]`: the same sequence `Tokens.to_sequence` gives."""
        if self.ids is None:
            raise InputError("continuous tokens have no ids to flatten; use `tokens.latent` as the model input instead")
        ids = self.ids.astype(np.int64)
        if self.multi_codebook:
            ids = ids + np.asarray(self.offsets, dtype=np.int64)
        return ids.reshape(ids.shape[0], -1)

    @classmethod
    def from_sequence(cls, sequence: Any, like: NumpyTokens) -> NumpyTokens:
        """Undo `to_sequence`, taking grid and codebooks from `like`."""
        seq = np.asarray(sequence)
        if seq.ndim == 1:
            seq = seq[None]
        q = len(like.codebook_sizes) if like.multi_codebook else 1
        per_item = q * int(np.prod(like.grid, dtype=np.int64))
        if seq.shape[-1] != per_item:
            raise InputError(
                f"a sequence for grid {tuple(like.grid)} with {q} codebook(s) has {per_item} ids; got {seq.shape[-1]}. "
                "Pass the tokens the sequence was made from as `like`."
            )
        ids = seq.astype(np.int64).reshape(seq.shape[0], *like.grid, *((q,) if like.multi_codebook else ()))
        if like.multi_codebook:
            ids = ids - np.asarray(like.offsets, dtype=np.int64)
            if bool(((ids < 0) | (ids >= np.asarray(like.codebook_sizes))).any()):
                raise InputError(
                    f"sequence ids fall outside their codebook's range (offsets {like.offsets}, sizes "
                    f"{list(like.codebook_sizes)}); was it made by another tokenizer?"
                )
        return like.replace(ids=ids, lengths=None, extras={}, original_size=None)

    # -- torch interop -----------------------------------------------------------------------------
    def to_torch(self) -> Any:
        """The same tokens as `zoo.tokens.Tokens` (needs torch)."""
        import torch

        from zoo.tokens import Tokens

        def tensor(a: np.ndarray | None) -> Any:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

        return Tokens(
            ids=tensor(self.ids), modality=self.modality, codebook_sizes=tuple(self.codebook_sizes),
            grid=tuple(self.grid), latent=tensor(self.latent), lengths=tensor(self.lengths),
            original_size=tensor(self.original_size), extras={k: tensor(v) for k, v in self.extras.items()},
            meta=dict(self.meta), producer=self.producer, version=self.version,
        )

    @classmethod
    def from_torch(cls, tokens: Any) -> NumpyTokens:
        """`zoo.tokens.Tokens` (or any object with the same fields) as numpy tokens."""
        return cls(
            ids=as_numpy(tokens.ids), modality=tokens.modality, codebook_sizes=tuple(tokens.codebook_sizes),
            grid=tuple(int(g) for g in tokens.grid), latent=as_numpy(tokens.latent),
            lengths=as_numpy(tokens.lengths), original_size=as_numpy(tokens.original_size),
            extras={k: as_numpy(v) for k, v in tokens.extras.items()}, meta=dict(tokens.meta),
            producer=tokens.producer, version=tokens.version,
        )

    # -- persistence (the zoo.tokens file format) -------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the safetensors file `Tokens.save` writes (atomically: temporary file, then rename)."""
        from safetensors.numpy import save_file

        path = Path(path)
        arrays = {n: np.ascontiguousarray(getattr(self, n)) for n in _ARRAYS if getattr(self, n) is not None}
        arrays.update({f"extras.{k}": np.ascontiguousarray(v) for k, v in self.extras.items()})
        header = {"format": TOKENS_FORMAT, "modality": self.modality, "codebook_sizes": list(self.codebook_sizes),
                  "grid": list(self.grid), "meta": self.meta, "producer": self.producer, "version": self.version}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(arrays, tmp, metadata={"tokenzoo": json.dumps(header)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> NumpyTokens:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise MediaError(f"{path}: no such tokens file (expected a .safetensors written by Tokens.save)")
        try:
            with safe_open(str(path), "np") as handle:
                metadata = handle.metadata() or {}
                arrays = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - safe_open has no items()
        except Exception as exc:  # safetensors raises its own and OS errors for unreadable files
            raise MediaError(f"{path}: not a readable safetensors tokens file ({exc})") from None
        if "tokenzoo" not in metadata:
            raise MediaError(f"{path}: safetensors file without tokenzoo metadata; was it written by Tokens.save?")
        header = json.loads(metadata["tokenzoo"])
        if header.get("format") != TOKENS_FORMAT:
            raise MediaError(f"{path}: tokens format {header.get('format')!r}, expected {TOKENS_FORMAT!r}")
        return cls(
            ids=arrays.get("ids"), latent=arrays.get("latent"), lengths=arrays.get("lengths"),
            original_size=arrays.get("original_size"),
            extras={k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("extras.")},
            modality=header["modality"], codebook_sizes=tuple(header["codebook_sizes"]), grid=tuple(header["grid"]),
            meta=header.get("meta", {}), producer=header.get("producer", ""), version=header.get("version", ""),
        )

    def __repr__(self) -> str:
        what = f"ids={tuple(self.ids.shape)}" if self.ids is not None else ""
        if self.latent is not None:
            what = f"latent={tuple(self.latent.shape)}"
        return (f"NumpyTokens({self.modality}, {what}, grid={self.grid}, codebooks={list(self.codebook_sizes)}, "
                f"producer={self.producer!r})")


def as_numpy_tokens(tokens: Any) -> NumpyTokens:
    """NumpyTokens from NumpyTokens or zoo Tokens; other inputs are left to the caller (bare ids)."""
    if isinstance(tokens, NumpyTokens):
        return tokens
    return NumpyTokens.from_torch(tokens)

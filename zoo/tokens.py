"""`Tokens`: what a tokenizer's `encode` returns and its `decode` takes.

Ids keep the family's natural layout, with one convention shared by all: the batch axis first, then
the token grid, then (only for tokenizers with several codebooks per position) the codebook axis last:

    one codebook      ids: (B, *grid)        e.g. audio (B, T), image (B, h, w), video (B, t, h, w)
    n codebooks       ids: (B, *grid, Q)     e.g. residual VQ (B, T, Q), grouped bits (B, h, w, G)
    continuous        latent: (B, *grid, D)  no ids (a continuous tokenizer's tokens are its latent)

`to_sequence` flattens the ids of one item to one sequence for a language model: positions in
row-major grid order, and at each position the Q codebooks in order, codebook q shifted by
`offsets[q] = sum(codebook_sizes[:q])`, so every codebook owns a disjoint id range
[offsets[q], offsets[q] + codebook_sizes[q]). `Tokens.from_sequence` inverts it exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from registry.errors import InputError, MediaError

TOKENS_FORMAT = "tokenzoo.tokens/1"


@dataclass
class Tokens:
    """Token ids plus everything needed to decode and to read them."""

    ids: torch.Tensor | None
    modality: str
    codebook_sizes: tuple[int, ...] = ()
    grid: tuple[int, ...] = ()
    latent: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    original_size: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    producer: str = ""
    version: str = ""

    # -- shape helpers -------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        data = self.ids if self.ids is not None else self.latent
        if data is None:
            raise InputError("these Tokens hold neither ids nor a latent; nothing to read")
        return int(data.shape[0])

    @property
    def num_codebooks(self) -> int:
        return max(len(self.codebook_sizes), 1)

    @property
    def multi_codebook(self) -> bool:
        """True when ids carry a trailing codebook axis."""
        return self.ids is not None and self.ids.dim() == len(self.grid) + 2

    @property
    def offsets(self) -> list[int]:
        """Where each codebook's ids start in the flattened language-model vocabulary."""
        out, acc = [], 0
        for size in self.codebook_sizes:
            out.append(acc)
            acc += int(size)
        return out

    @property
    def vocab_size(self) -> int:
        return int(sum(self.codebook_sizes))

    def replace(self, **changes: Any) -> Tokens:
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> Tokens:
        move = (lambda t: t.to(device) if isinstance(t, torch.Tensor) else t)  # noqa: E731
        return self.replace(
            ids=move(self.ids),
            latent=move(self.latent),
            lengths=move(self.lengths),
            original_size=move(self.original_size),
            extras={k: move(v) for k, v in self.extras.items()},
        )

    def item(self, index: int) -> Tokens:
        """One batch item as Tokens of batch size 1 (trimmed to its own length when lengths are set)."""
        pick = (lambda t: t[index : index + 1] if isinstance(t, torch.Tensor) else t)  # noqa: E731
        ids, latent = pick(self.ids), pick(self.latent)
        grid = self.grid
        if self.lengths is not None:
            n = int(self.lengths[index])
            ids = ids[:, :n] if ids is not None else None
            latent = latent[:, :n] if latent is not None else None
            grid = (n, *self.grid[1:])
        return self.replace(
            ids=ids,
            latent=latent,
            grid=grid,
            lengths=pick(self.lengths),
            original_size=pick(self.original_size),
            extras={k: pick(v) for k, v in self.extras.items()},
        )

    # -- language-model sequence -----------------------------------------------------------------
    def to_sequence(self) -> torch.Tensor:
        """(B, L) int64: one id sequence per item, codebook q shifted by `offsets[q]` (see module doc)."""
        if self.ids is None:
            raise InputError(
                "continuous tokens have no ids to flatten; use `tokens.latent` as the model input instead"
            )
        ids = self.ids.long()
        if self.multi_codebook:
            shift = torch.tensor(self.offsets, dtype=torch.long, device=ids.device)
            ids = ids + shift
        return ids.reshape(ids.shape[0], -1)

    @classmethod
    def from_sequence(cls, sequence: torch.Tensor, like: Tokens) -> Tokens:
        """Undo `to_sequence`, taking grid and codebooks from `like` (e.g. the tokenizer's `empty_tokens`)."""
        seq = torch.as_tensor(sequence)
        if seq.dim() == 1:
            seq = seq.unsqueeze(0)
        q = len(like.codebook_sizes) if like.multi_codebook else 1
        per_item = q
        for g in like.grid:
            per_item *= int(g)
        if seq.shape[-1] != per_item:
            raise InputError(
                f"a sequence for grid {tuple(like.grid)} with {q} codebook(s) has {per_item} ids; "
                f"got {seq.shape[-1]}. Pass the Tokens the sequence was made from as `like`."
            )
        ids = seq.long().reshape(seq.shape[0], *like.grid, *((q,) if like.multi_codebook else ()))
        if like.multi_codebook:
            shift = torch.tensor(like.offsets, dtype=torch.long, device=ids.device)
            ids = ids - shift
            sizes = torch.tensor(like.codebook_sizes, dtype=torch.long, device=ids.device)
            if bool(((ids < 0) | (ids >= sizes)).any()):
                raise InputError(
                    f"sequence ids fall outside their codebook's range (offsets {like.offsets}, sizes "
                    f"{list(like.codebook_sizes)}); was it made by another tokenizer?"
                )
        return like.replace(ids=ids, lengths=None, extras={}, original_size=None)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write safetensors atomically (temporary file, then rename)."""
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for name in ("ids", "latent", "lengths", "original_size"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value.detach().cpu().contiguous()
        for name, value in self.extras.items():
            tensors[f"extras.{name}"] = value.detach().cpu().contiguous()
        header = {
            "format": TOKENS_FORMAT,
            "modality": self.modality,
            "codebook_sizes": list(self.codebook_sizes),
            "grid": list(self.grid),
            "meta": self.meta,
            "producer": self.producer,
            "version": self.version,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"tokenzoo": json.dumps(header)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokens:
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"{path}: no such tokens file (expected a .safetensors written by Tokens.save)")
        try:
            tensors = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise MediaError(f"{path}: not a readable safetensors tokens file ({exc})") from None
        if "tokenzoo" not in metadata:
            raise MediaError(f"{path}: safetensors file without tokenzoo metadata; was it written by Tokens.save?")
        header = json.loads(metadata["tokenzoo"])
        if header.get("format") != TOKENS_FORMAT:
            raise MediaError(f"{path}: tokens format {header.get('format')!r}, expected {TOKENS_FORMAT!r}")
        extras = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("extras.")}
        return cls(
            ids=tensors.get("ids"),
            latent=tensors.get("latent"),
            lengths=tensors.get("lengths"),
            original_size=tensors.get("original_size"),
            extras=extras,
            modality=header["modality"],
            codebook_sizes=tuple(header["codebook_sizes"]),
            grid=tuple(header["grid"]),
            meta=header.get("meta", {}),
            producer=header.get("producer", ""),
            version=header.get("version", ""),
        )

    def __repr__(self) -> str:
        what = f"ids={tuple(self.ids.shape)}" if self.ids is not None else ""
        if self.latent is not None:
            what = f"latent={tuple(self.latent.shape)}"
        return (
            f"Tokens({self.modality}, {what}, grid={self.grid}, codebooks={list(self.codebook_sizes)}, "
            f"producer={self.producer!r})"
        )

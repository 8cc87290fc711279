"""The `Tokenizer` base class every family derives from.

A family implements the tensor paths (`encode_ids`, `decode_ids`, both exportable) and the Tokens
bookkeeping around them (`encode`, `decode`); the base class gives input checking, id checking,
export wrappers, persistence and the Hub.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from registry.errors import InputError, UnsupportedError
from zoo.layers.quantize.base import checks_enabled
from zoo.spec import TokenSpec
from zoo.tokens import Tokens

__version__ = "0.1.0"

_LAYOUTS = {
    "image": ("(C,H,W) or (B,C,H,W)", 4),
    "video": ("(C,T,H,W) or (B,C,T,H,W)", 5),
    "audio": ("(N,), (C,N) or (B,C,N)", 3),
}


def is_exporting() -> bool:
    """True inside torch.onnx / torch.export / tracing / compiling, where Python-side checks must not run."""
    return not checks_enabled()


def as_canonical(x: Any, modality: str, channels: int | None = None) -> torch.Tensor:
    """A float tensor in the canonical batched layout, or an InputError that says what to pass."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"expected a torch.Tensor or numpy array for {modality} input, got {type(x).__name__}; "
            f"load files with modalities.{modality}.load(path)"
        )
    layout, ndim = _LAYOUTS[modality]
    if not x.is_floating_point():
        raise InputError(
            f"{modality} input must be floating point (values in the canonical range), got {x.dtype}; "
            "convert with modalities' loaders or x.float() / 127.5 - 1 for uint8 images"
        )
    while x.dim() < ndim:
        x = x.unsqueeze(0)
    if x.dim() != ndim:
        raise InputError(f"{modality} input must be laid out {layout}; got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise InputError(f"{modality} input is empty (shape {tuple(x.shape)}); nothing to tokenize")
    if channels is not None and x.shape[1] != channels:
        raise InputError(
            f"{modality} input has {x.shape[1]} channels, this tokenizer takes {channels}; "
            + ("downmix with x.mean(1, keepdim=True)" if modality == "audio" and channels == 1 else
               "convert to the expected channel count first")
        )
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{modality} input contains NaN or Inf values; clean or clip the input first")
    return x


def check_ids(ids: torch.Tensor, sizes: int | tuple[int, ...] | list[int], what: str = "ids") -> torch.Tensor:
    """Integer ids within [0, size) per codebook (last axis when several sizes are given)."""
    if is_exporting():
        return ids
    ids = torch.as_tensor(ids)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise InputError(f"{what} must be an integer tensor, got {ids.dtype}; use ids.long()")
    if ids.numel() == 0:
        raise InputError(f"{what} is empty (shape {tuple(ids.shape)}); nothing to decode")
    if isinstance(sizes, int):
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= sizes:
            raise InputError(f"{what} must lie in [0, {sizes - 1}]; got values in [{low}, {high}]")
        return ids.long()
    sizes_t = torch.as_tensor(list(sizes), dtype=torch.long)
    if ids.shape[-1] > len(sizes):
        raise InputError(f"{what} has {ids.shape[-1]} codebooks on its last axis; at most {len(sizes)} exist")
    sizes_t = sizes_t[: ids.shape[-1]]
    bad = (ids < 0) | (ids.long() >= sizes_t)
    if bool(bad.any()):
        raise InputError(
            f"{what} must lie in [0, size) per codebook (sizes {list(sizes)}); got values in "
            f"[{int(ids.min())}, {int(ids.max())}]"
        )
    return ids.long()


class Tokenizer(nn.Module):
    """Base class: media tensor in, `Tokens` out, and back.

    Subclasses set `family` and `config_class` (a dataclass), build their modules in `__init__(config)`,
    and implement `spec`, `encode_ids`, `encode`, `decode_ids`, `decode` (and `embed` when they have
    codebooks). `encode_ids` / `decode_ids` are the tensor-in/tensor-out paths the ONNX export traces.
    """

    family: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.variant: str | None = None
        self.source: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}

    # -- contract ------------------------------------------------------------------------------
    @property
    def spec(self) -> TokenSpec:
        raise NotImplementedError

    def encode(self, x: Any, **kwargs: Any) -> Tokens:
        raise NotImplementedError

    def decode(self, tokens: Tokens | torch.Tensor, **kwargs: Any) -> torch.Tensor:
        raise UnsupportedError(
            f"{self.name} is encoder-only: it has no decoder, so tokens cannot be turned back into "
            f"{self.spec.modality}. Use embed(ids) for code vectors, or pick a tokenizer whose spec says "
            "it decodes (zoo list)."
        )

    def encode_ids(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical media tensor -> ids (or latent), no Python-side bookkeeping; what export traces."""
        raise NotImplementedError

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids (or latent) -> media tensor, no trimming; what export traces."""
        raise UnsupportedError(f"{self.name} has no decoder (encoder-only tokenizer)")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors for ids (what an LLM adapter reads)."""
        raise UnsupportedError(f"{self.name} has no codebook to embed ids with")

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """Training step: reconstruction plus the quantizer's losses (families override)."""
        raise UnsupportedError(f"{self.name} does not implement a training forward")

    # -- upstream id layouts ---------------------------------------------------------------------
    def tokens_to_upstream(self, tokens: Tokens) -> torch.Tensor:
        """Our Tokens as the upstream implementation lays out its ids (default: the same layout)."""
        if tokens.ids is None:
            raise UnsupportedError(f"{self.name} tokens are continuous; there are no upstream ids")
        return tokens.ids

    def tokens_from_upstream(self, ids: Any, **kwargs: Any) -> Tokens:
        """Tokens from ids laid out as upstream writes them (e.g. token datasets made with upstream)."""
        raise UnsupportedError(f"{self.name} does not define an upstream id layout")

    # -- export wrappers -------------------------------------------------------------------------
    def encoder_module(self) -> nn.Module:
        return _Call(self, "encode_ids")

    def decoder_module(self) -> nn.Module:
        if not self.spec.can_decode:
            raise UnsupportedError(f"{self.name} is encoder-only; there is no decoder graph to export")
        return _Call(self, "decode_ids")

    # -- helpers for families --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.variant or self.family or type(self).__name__

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float32

    def prepare(self, x: Any) -> torch.Tensor:
        """Check and move a user's input to this model's device/dtype in the canonical layout."""
        spec = self.spec
        x = as_canonical(x, spec.modality, spec.channels)
        return x.to(device=self.device, dtype=self.dtype)

    def make_tokens(self, ids: torch.Tensor | None, **fields: Any) -> Tokens:
        spec = self.spec
        return Tokens(
            ids=ids,
            modality=spec.modality,
            codebook_sizes=tuple(spec.codebook_sizes),
            producer=self.name,
            version=__version__,
            **fields,
        )

    def config_dict(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self.config):
            return dataclasses.asdict(self.config)
        from omegaconf import OmegaConf

        return OmegaConf.to_container(self.config, resolve=True)  # type: ignore[return-value]

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, **card: Any) -> str:
        from registry.hub import save_pretrained

        return str(save_pretrained(self, path, **card))

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        from registry.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, ref: str, **kwargs: Any) -> Tokenizer:
        from registry import from_pretrained

        return from_pretrained(ref, **kwargs)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


class _Call(nn.Module):
    """Wrap one tensor method of a tokenizer as a module (what torch.onnx.export takes)."""

    def __init__(self, tokenizer: Tokenizer, method: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.method = method

    def forward(self, *args: torch.Tensor) -> Any:
        return getattr(self.tokenizer, self.method)(*args)

"""What every runtime recipe shares: access to the graphs, option checks and Tokens construction."""

from __future__ import annotations

from typing import Any

import numpy as np

from export.errors import InputError, UnsupportedError
from export.tokens import NumpyTokens, as_numpy_tokens


class Handler:
    """The family-specific work around the graphs. Subclasses implement `encode` and (if any) `decode`."""

    def __init__(self, tok: Any, recipe: dict[str, Any]) -> None:
        self.tok = tok
        self.recipe = recipe

    @property
    def spec(self) -> Any:
        return self.tok.spec

    def run(self, graph: str, *arrays: np.ndarray) -> Any:
        return self.tok.graph(graph)(*arrays)

    def encode(self, x: Any, **options: Any) -> NumpyTokens:
        raise UnsupportedError(f"{self.tok.name}: this export has no encoder")

    def decode(self, tokens: Any, **options: Any) -> np.ndarray:
        reason = (self.spec.export or {}).get("decoder") or "it has no decoder"
        raise UnsupportedError(
            f"{self.tok.name} cannot decode in onnxruntime: {reason}. Tokens of an encoder-only tokenizer are read by "
            "a language model, not turned back into media."
        )

    # -- helpers for subclasses --------------------------------------------------------------------
    def reject_unknown(self, options: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            takes = ", ".join(f"{a}=" for a in allowed) if allowed else "no options"
            raise InputError(f"unknown {what} option(s) {unknown}; {self.tok.name} in onnxruntime takes {takes}")

    def fixed_options(self, options: dict[str, Any]) -> None:
        """Options baked into the graphs at export: accepted only at their exported value."""
        for key, value in (self.recipe.get("fixed") or {}).items():
            given = options.pop(key, None)
            if given is not None and given != value:
                raise UnsupportedError(
                    f"{self.tok.name}: the graphs were exported with {key}={value!r}; {key}={given!r} needs the "
                    "PyTorch tokenizer (or an export made with that setting)"
                )

    @staticmethod
    def tokens_of(tokens: Any) -> NumpyTokens | None:
        """NumpyTokens for Tokens-like input, None for bare arrays."""
        if isinstance(tokens, NumpyTokens) or (hasattr(tokens, "modality") and hasattr(tokens, "codebook_sizes")):
            return as_numpy_tokens(tokens)
        return None

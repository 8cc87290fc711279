"""`OnnxTokenizer`: a tokenizer exported by `export.to_onnx`, run with onnxruntime and numpy only.

    from export import OnnxTokenizer
    tok = OnnxTokenizer("out/wavtokenizer")
    tokens = tok.encode(wave)          # NumpyTokens: the fields and id layout of zoo.Tokens
    audio = tok.decode(tokens)         # numpy float32, trimmed like the PyTorch decode

Importing this module never imports torch. The manifest written beside the graphs names the
runtime recipe (`runtime.handler`) that does the family's pre/post-processing around the graphs
(resampling, padding, windows, trimming, flow sampling); see `export.handlers`.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from export.errors import BackendError, ConfigError, InputError
from export.manifest import read_manifest
from export.tokens import NumpyTokens

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            "OnnxTokenizer runs the graphs with onnxruntime, which is not installed: pip install onnxruntime "
            "(or 'tokenzoo[onnx]')"
        ) from exc
    return onnxruntime


class Graph:
    """One exported graph; the onnxruntime session opens on first use. Call it with arrays in input order."""

    def __init__(self, path: Path, providers: list[str] | None, threads: int | None) -> None:
        self.path = path
        self.providers = providers
        self.threads = threads
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            ort = _onnxruntime()
            options = ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = int(self.threads)
                options.inter_op_num_threads = 1
            providers = self.providers or ["CPUExecutionProvider"]
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        return self._session

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def __call__(self, *arrays: np.ndarray) -> Any:
        inputs = self.session.get_inputs()
        if len(arrays) != len(inputs):
            names = [i.name for i in inputs]
            raise InputError(f"{self.path.name} takes {len(inputs)} input(s) {names}; got {len(arrays)}")
        feeds = {
            i.name: np.ascontiguousarray(a, dtype=_ORT_TYPES.get(i.type)) for i, a in zip(inputs, arrays, strict=True)
        }
        outputs = self.session.run(None, feeds)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class OnnxTokenizer:
    """The `encode` / `decode` API of a zoo tokenizer over its exported ONNX graphs (no PyTorch).

    `providers`: onnxruntime execution providers (default CPU); `threads`: intra-op threads per
    session (default: onnxruntime's choice). Tokens come back as `NumpyTokens` (`to_torch()` gives
    `zoo.Tokens`); `decode` takes either kind, or bare ids / latents.
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None) -> None:
        from export.handlers import HANDLERS

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        m = self.manifest
        self.family: str = m["family"]
        self.variant: str | None = m.get("variant")
        self.name: str = m.get("name") or self.variant or self.family
        self.version: str = m.get("tokenzoo_version", "")
        self.spec = SimpleNamespace(**m["spec"])
        self.graphs = {name: Graph(self.path / g["file"], providers, threads) for name, g in m["graphs"].items()}
        handler = m["runtime"].get("handler")
        if handler not in HANDLERS:
            raise ConfigError(
                f"{self.path}: runtime recipe {handler!r} is not known to this tokenzoo ({sorted(HANDLERS)}); "
                "re-export with this version or upgrade tokenzoo"
            )
        self.handler = HANDLERS[handler](self, m["runtime"])

    # -- the tokenizer API -------------------------------------------------------------------------
    def encode(self, x: Any, **options: Any) -> NumpyTokens:
        """Media array (canonical layout, as the PyTorch tokenizer takes it) -> NumpyTokens."""
        return self.handler.encode(x, **options)

    def decode(self, tokens: Any, **options: Any) -> np.ndarray:
        """NumpyTokens, zoo Tokens or bare ids / latent -> media array (float32)."""
        return self.handler.decode(tokens, **options)

    # -- helpers -------------------------------------------------------------------------------------
    def graph(self, name: str) -> Graph:
        if name not in self.graphs:
            raise ConfigError(
                f"{self.name}: the export at {self.path} has no {name!r} graph (it has {sorted(self.graphs)}); "
                "re-export it with this version of tokenzoo"
            )
        return self.graphs[name]

    def make_tokens(self, ids: np.ndarray | None, **fields: Any) -> NumpyTokens:
        fields.setdefault("codebook_sizes", tuple(self.spec.codebook_sizes))
        fields.setdefault("modality", self.spec.modality)
        return NumpyTokens(ids=ids, producer=self.name, version=self.version, **fields)

    def __repr__(self) -> str:
        return f"OnnxTokenizer({self.name!r}, graphs={sorted(self.graphs)}, path={str(self.path)!r})"


__all__ = ["Graph", "NumpyTokens", "OnnxTokenizer"]

"""ONNX export of tokenizers and a torch-free onnxruntime tokenizer with the same encode/decode API.

    import export
    export.to_onnx(tok, "out/wavtokenizer", verify=True)     # needs torch (and onnx, onnxscript)
    onnx_tok = export.OnnxTokenizer("out/wavtokenizer")      # needs numpy + onnxruntime only
    tokens = onnx_tok.encode(wave)

Importing this package does not import torch: `to_onnx` loads the exporter when it is called.
"""

from __future__ import annotations

from typing import Any

from export.runtime import OnnxTokenizer
from export.tokens import NumpyTokens


def to_onnx(tokenizer: Any, out_dir: Any, verify: bool = False, opset: int = 18, tolerance: float = 1e-4) -> dict:
    """Export `tokenizer`'s graphs to `out_dir` with a manifest; `verify` compares onnxruntime with PyTorch."""
    from export.onnx_export import to_onnx as _to_onnx

    return _to_onnx(tokenizer, out_dir, verify=verify, opset=opset, tolerance=tolerance)


__all__ = ["NumpyTokens", "OnnxTokenizer", "to_onnx"]

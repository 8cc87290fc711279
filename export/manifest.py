"""The JSON manifest beside exported graphs: what they are, how to feed them, and where they came from.

Fields: `format`, `tokenzoo_version`, `name` / `family` / `variant`, `opset`, `checkpoint`
(sha256 of model.safetensors when the tokenizer was loaded from a folder, else of the state dict's
bytes), `spec` (the TokenSpec), `input` (layout, dtype, value range, normalisation), `graphs` (file,
inputs and outputs with symbolic axes), `runtime` (the recipe `OnnxTokenizer` follows around the
graphs) and, after `--verify`, `verification`. Reading needs no torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from export.errors import CheckpointError

MANIFEST_NAME = "manifest.json"
FORMAT = "tokenzoo.onnx/1"

_LAYOUTS = {
    "audio": "(B, C, N) float32 waveform at spec.sample_rate",
    "image": "(B, C, H, W) float32",
    "video": "(B, C, T, H, W) float32",
}


def input_description(spec: Any) -> dict[str, Any]:
    """How media enters the encoder: layout, dtype, value range and the normalisation applied to it."""
    low, high = (float(v) for v in spec.value_range)
    out: dict[str, Any] = {
        "modality": spec.modality,
        "layout": _LAYOUTS[spec.modality],
        "dtype": "float32",
        "value_range": [low, high],
        "channels": spec.channels,
        "normalisation": (
            f"canonical {spec.modality} in [{low:g}, {high:g}]"
            + (" (pixels / 127.5 - 1)" if spec.modality != "audio" else " (full-scale PCM / 32768 for int16)")
            + "; any model-specific normalisation happens inside the encoder graph"
        ),
    }
    if spec.sample_rate:
        out["sample_rate"] = spec.sample_rate
    if spec.input_size:
        out["input_size"] = list(spec.input_size)
    return out


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest.json` atomically (temporary file, then rename)."""
    path = folder / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(manifest, handle, indent=2, default=_jsonable)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an export folder is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an export folder, checked for the fields the runtime needs."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        what = "no such folder" if not folder.exists() else f"no {MANIFEST_NAME} in it"
        raise CheckpointError(
            f"{folder}: not a tokenzoo ONNX export ({what}); make one with `zoo export NAME --out {folder}` or "
            "export.to_onnx(tokenizer, folder)"
        )
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the file is truncated or edited") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{path}: not a tokenzoo ONNX manifest (format {found!r}, expected {FORMAT!r})")
    missing = [k for k in ("family", "spec", "graphs", "runtime") if k not in manifest]
    if missing:
        raise CheckpointError(f"{path}: manifest lacks {missing}; re-export the tokenizer")
    absent = [g["file"] for g in manifest["graphs"].values() if not (folder / g["file"]).is_file()]
    if absent:
        raise CheckpointError(f"{folder}: graph file(s) {absent} named in {MANIFEST_NAME} are missing; re-export")
    return manifest


def checkpoint_hash(tok: Any) -> dict[str, str]:
    """sha256 of the checkpoint the tokenizer came from: its model.safetensors, else its state dict's bytes."""
    import hashlib

    folder = (tok.source or {}).get("path")
    weights = Path(folder) / "model.safetensors" if folder else None
    if weights is not None and weights.is_file():
        digest = hashlib.sha256()
        with open(weights, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return {"sha256": digest.hexdigest(), "of": "model.safetensors", "path": str(weights)}
    return {"sha256": state_dict_sha256(tok.state_dict()), "of": "state_dict"}


def state_dict_sha256(state: dict[str, Any]) -> str:
    """sha256 over the sorted keys, each with its dtype, shape and raw bytes (any dtype, bfloat16 included)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)

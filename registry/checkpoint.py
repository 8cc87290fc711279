"""Reading checkpoint files without executing code, and strict state-dict loading."""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from registry.errors import CheckpointError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
AUTO_CONTAINERS = ("state_dict", "generator", "model", "module")
# Plain-data classes research checkpoints carry beside their weights (e.g. the argparse options that
# TokenFlow's and LlamaGen's training scripts save as checkpoint["args"]); the weights-only unpickler
# still restricts what they hold.
SAFE_PICKLE_GLOBALS = [argparse.Namespace]


def sha256_of(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str | None) -> None:
    if not expected:
        return
    got = sha256_of(path)
    if got != expected.lower():
        raise CheckpointError(
            f"{path}: sha256 {got} does not match the pinned {expected}. The upstream file changed or the "
            "download is corrupt; a mismatched checkpoint can decode without error to nonsense. Delete the "
            "cached file and download again, or pin the new file's revision and sha256 in the variant config."
        )


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: not a complete safetensors file ({exc}). It may be truncated: download it again."
        ) from None


def read_torch_pickle(path: str | Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    try:
        with torch.serialization.safe_globals(SAFE_PICKLE_GLOBALS):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refusing to unpickle it: the file needs code execution to load "
            f"({str(exc).splitlines()[0][:200]}). tokenzoo reads checkpoints only with weights_only=True or "
            "safetensors. Re-save it as safetensors from a trusted environment "
            "(safetensors.torch.save_file(state_dict, 'model.safetensors'))."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:200]}); it may be "
            "truncated or corrupt: download it again."
        ) from None


def _is_zip(path: str | Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


ONNX_GRAPH_KEY = "@graph"


def read_onnx_initializers(path: str | Path, graph: bool = False) -> dict[str, Any]:
    """The weights (initializers) of an ONNX file, as torch tensors; no onnxruntime needed.

    ONNX exporters often give weights anonymous names (`onnx::MatMul_123`); what they are is only
    told by the graph node that consumes them. With `graph=True` the result also holds, under the key
    `ONNX_GRAPH_KEY` ("@graph"), the same tensors (no copies) keyed by their use, in node order:
    `"<node name>|<op type>|<input index>|<initializer name>"` (an initializer used twice appears
    twice). `dig(..., container=None)` skips that entry (not a tensor); `container=["@graph"]` selects it.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise CheckpointError("reading ONNX weights needs the `onnx` package: pip install 'tokenzoo[onnx]'") from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises assorted protobuf errors
        raise CheckpointError(f"{path}: not a readable ONNX file ({exc})") from None
    out: dict[str, Any] = {}
    for init in model.graph.initializer:
        out[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
    if graph:
        uses: dict[str, torch.Tensor] = {}
        for node in model.graph.node:
            for index, name in enumerate(node.input):
                if name in out:
                    uses[f"{node.name}|{node.op_type}|{index}|{name}"] = out[name]
        out[ONNX_GRAPH_KEY] = uses
    return out


def read_checkpoint(path: str | Path) -> Any:
    """Read any supported upstream file by its suffix, safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors(path)
    if suffix == ".onnx":
        return read_onnx_initializers(path, graph=True)
    if suffix == ".json" and path.name.endswith(".index.json"):
        return read_sharded_safetensors(path)
    if suffix in PICKLE_SUFFIXES or _is_zip(path):
        return read_torch_pickle(path)
    raise CheckpointError(
        f"{path}: unsupported checkpoint type {suffix!r}; expected .safetensors, a weights_only-loadable "
        f"PyTorch file ({', '.join(PICKLE_SUFFIXES)}), a sharded safetensors index or .onnx"
    )


def read_sharded_safetensors(index_path: str | Path) -> dict[str, torch.Tensor]:
    index_path = Path(index_path)
    try:
        index = json.loads(index_path.read_text())
        weight_map: dict[str, str] = index["weight_map"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{index_path}: not a safetensors index with a weight_map ({exc})") from None
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        out.update(read_safetensors(index_path.parent / shard))
    return out


def dig(obj: Any, container: Iterable[str] | None, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Walk into a loaded checkpoint (e.g. ["state_dict"]) and return the tensor dict found there.

    With no container given, a dict that holds no tensors at its top level is searched for the usual
    wrappers (Lightning's `state_dict`, `generator`, `model`, `module`, `model_ema`-free order).
    """
    if container is None and isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in AUTO_CONTAINERS:
            if isinstance(obj.get(key), dict):
                container = [key]
                break
    for key in container or ():
        if not isinstance(obj, dict) or key not in obj:
            keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{where}: expected a {key!r} entry, found {keys}")
        obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: expected a dict of tensors, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_state_strict(
    module: torch.nn.Module, state: dict[str, torch.Tensor], where: str, assign: bool = False
) -> None:
    """load_state_dict that names every missing, unexpected and mis-shaped key in one error.

    `assign=True` takes the given tensors instead of copying them (a model built on the meta device
    is filled without holding two copies of the weights).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:10])}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:10])}")
    if problems:
        raise CheckpointError(
            f"{where} does not fit the model its config.json describes: " + " | ".join(problems)
            + ". The checkpoint was altered or belongs to another variant; re-download or re-convert it."
        )
    module.load_state_dict(state, strict=True, assign=assign)

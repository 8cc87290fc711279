"""tokenzoo checkpoints on disk and on the Hub: config.json + model.safetensors + README.md.

Saving writes the whole folder next to its target and renames it into place, so a crash never leaves
a half-written checkpoint and an existing one is replaced only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model

from registry.checkpoint import load_state_strict, read_safetensors
from registry.errors import CheckpointError
from registry.model_card import model_card

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT = "tokenzoo/1"


def checkpoint_config(tok: Any) -> dict[str, Any]:
    from zoo.tokenizer import __version__

    return {
        "format": FORMAT,
        "family": tok.family,
        "variant": tok.variant,
        "tokenzoo_version": __version__,
        "config": tok.config_dict(),
        "spec": tok.spec.as_dict(),
        "source": tok.source,
        "metrics": tok.metrics,
    }


def save_pretrained(tok: Any, path: str | os.PathLike, **card: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        config = checkpoint_config(tok)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=_jsonable) + "\n")
        save_model(tok, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "tokenzoo": FORMAT})
        (tmp / CARD_NAME).write_text(str(model_card(tok, config, **card)))
        backup = None
        if path.exists():
            backup = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, backup)
        os.replace(tmp, path)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        hint = ""
        if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.ckpt")):
            hint = (" It holds pickle files only: tokenzoo does not execute pickles; convert upstream files with "
                    "`zoo convert FAMILY FILE --out DIR`.")
        raise CheckpointError(f"{path}: no {CONFIG_NAME}; not a tokenzoo checkpoint folder.{hint}")
    try:
        config = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc}); the file is truncated or edited") from None
    if config.get("format") != FORMAT or "family" not in config:
        raise CheckpointError(
            f"{cfg_path}: not a tokenzoo config (format {config.get('format')!r}, expected {FORMAT!r})"
        )
    return config


def load_local(path: str | os.PathLike, device: str | torch.device | None = None) -> Any:
    """Build the tokenizer a checkpoint folder describes and load its weights strictly."""
    from registry.registry import build

    path = Path(path)
    config = read_checkpoint_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS_NAME} beside config.json (pickle files are never loaded)")
    state = read_safetensors(weights)
    tok = build(config["family"], config.get("config") or {}, variant=config.get("variant"))
    load_state_strict(tok, state, where=str(weights))
    tok.source = dict(config.get("source") or {})
    tok.source.setdefault("path", str(path))
    tok.metrics = dict(config.get("metrics") or {})
    tok.eval()
    if device is not None:
        tok.to(device)
    return tok


def push_to_hub(
    tok: Any,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> str:
    """Save to a temporary folder and upload it with huggingface_hub; returns the commit URL/oid."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(tok, Path(tmp) / "ckpt")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(Path(tmp) / "ckpt"),
            commit_message=commit_message or f"Upload {tok.name} with tokenzoo",
            revision=revision,
            create_pr=create_pr,
        )
    return str(getattr(info, "oid", None) or info)

"""`from_pretrained`: a registered name, a local folder, or `hf-hub:org/repo[@revision]`.

Registered variants with an `upstream` source are downloaded with huggingface_hub, checked against the
pinned sha256, read without executing code, converted by the family's converter, and the converted
checkpoint is cached (tokenzoo format) so the next load is fast and works offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from registry.checkpoint import dig, read_checkpoint, verify_sha256
from registry.config import load_variant_config
from registry.errors import CheckpointError, ConfigError
from registry.hub import CONFIG_NAME, load_local
from registry.registry import convert, create_tokenizer, variant_family

HUB_PREFIX = "hf-hub:"


def cache_root() -> Path:
    return Path(os.environ.get("TOKENZOO_CACHE", Path.home() / ".cache" / "tokenzoo"))


def from_pretrained(ref: str | os.PathLike, *, device: str | torch.device | None = None, **kwargs: Any) -> Any:
    """Load a tokenizer by registered name, local checkpoint folder or `hf-hub:org/repo[@rev]`."""
    ref_s = str(ref)
    if ref_s.startswith(HUB_PREFIX):
        return _from_hub(ref_s[len(HUB_PREFIX):], device=device, **kwargs)
    path = Path(ref_s).expanduser()
    if path.is_dir():
        return load_local(path, device=device)
    if path.suffix and path.exists():
        raise CheckpointError(
            f"{path} is a file; from_pretrained takes a checkpoint folder (config.json + model.safetensors), a "
            "registered name or hf-hub:org/repo. For upstream files use `zoo convert FAMILY FILE`."
        )
    return _from_variant(ref_s, device=device, **kwargs)


def _from_hub(spec: str, device: Any = None, token: str | None = None, **_: Any) -> Any:
    from huggingface_hub import snapshot_download

    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1:
        raise ConfigError(f"hf-hub reference {spec!r} must look like hf-hub:org/repo or hf-hub:org/repo@revision")
    folder = snapshot_download(
        repo,
        revision=revision or None,
        allow_patterns=[CONFIG_NAME, "model.safetensors", "README.md"],
        token=token,
    )
    tok = load_local(folder, device=device)
    tok.source.setdefault("hub", repo)
    if revision:
        tok.source.setdefault("hub_revision", revision)
    return tok


def _from_variant(name: str, device: Any = None, token: str | None = None, **_: Any) -> Any:
    family = variant_family(name)
    cfg = load_variant_config(name)
    if cfg.get("checkpoint"):
        return _own_checkpoint(name, OmegaConf.to_container(cfg.checkpoint), device=device, token=token)
    if not cfg.get("upstream"):
        raise ConfigError(
            f"{name} has no pretrained weights (its config names no upstream source or checkpoint); use "
            f"zoo.create_tokenizer({name!r}) for a randomly initialised model"
        )
    upstream = OmegaConf.to_container(cfg.upstream, resolve=True)
    cached = cache_root() / "converted" / f"{name}@{str(upstream.get('revision') or 'main')[:12]}"
    if (cached / CONFIG_NAME).is_file():
        return load_local(cached, device=device)
    state = download_upstream_state(name, upstream, token=token)
    tok = convert(family, state, upstream.get("config"))
    del state
    tok.variant = name
    tok.source = {k: v for k, v in upstream.items() if k not in ("config", "files")}
    tok.save_pretrained(cached)
    tok.eval()
    if device is not None:
        tok.to(device)
    return tok


def _own_checkpoint(name: str, checkpoint: dict[str, Any], device: Any = None, token: str | None = None) -> Any:
    if checkpoint.get("path"):
        base = Path(__file__).resolve().parent.parent
        folder = (base / checkpoint["path"]).resolve()
        if not (folder / CONFIG_NAME).is_file():
            raise CheckpointError(f"{name}: its bundled checkpoint {folder} is missing; reinstall tokenzoo")
        tok = load_local(folder, device=device)
    elif checkpoint.get("hub"):
        ref = checkpoint["hub"] + (f"@{checkpoint['revision']}" if checkpoint.get("revision") else "")
        tok = _from_hub(ref, device=device, token=token)
    else:
        raise ConfigError(f"{name}: `checkpoint` needs `path` (bundled) or `hub` (org/repo)")
    tok.variant = name
    return tok


def upstream_files(upstream: dict[str, Any]) -> list[dict[str, Any]]:
    """The file entries of an upstream block: `files: [{filename, sha256, container, prefix}]` or one file."""
    if upstream.get("files"):
        return list(upstream["files"])
    if not upstream.get("filename"):
        raise ConfigError("an upstream block needs `filename` or `files`")
    return [
        {
            "filename": upstream["filename"],
            "sha256": upstream.get("sha256"),
            "container": upstream.get("container"),
            "prefix": "",
        }
    ]


def download_upstream_state(name: str, upstream: dict[str, Any], token: str | None = None) -> dict[str, torch.Tensor]:
    from huggingface_hub import hf_hub_download

    state: dict[str, torch.Tensor] = {}
    for entry in upstream_files(upstream):
        local = hf_hub_download(
            upstream["repo"],
            entry["filename"],
            revision=entry.get("revision") or upstream.get("revision"),
            token=token,
        )
        verify_sha256(local, entry.get("sha256"))
        loaded = read_checkpoint(local)
        tensors = dig(loaded, entry.get("container"), where=f"{name}: {entry['filename']}")
        prefix = entry.get("prefix") or ""
        state.update({prefix + k: v for k, v in tensors.items()})
    return state


def convert_files(
    family: str, files: list[str | Path], upstream_config: Any = None, container: list[str] | None = None
) -> Any:
    """Convert local upstream files (the CLI's `zoo convert`)."""
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(dig(read_checkpoint(f), container, where=str(f)))
    return convert(family, state, upstream_config)


__all__ = ["cache_root", "convert_files", "create_tokenizer", "download_upstream_state", "from_pretrained"]

"""Variant YAMLs and structured model configs (OmegaConf: types checked, unknown keys refused)."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from configs import CONFIG_DIR
from registry.errors import ConfigError

_TOP_LEVEL = {"family", "modality", "description", "model", "upstream", "checkpoint", "license", "tags"}


def variant_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@cache
def _read(path: str) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable YAML config ({exc})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a variant config must be a mapping, got {type(cfg).__name__}")
    unknown = set(cfg.keys()) - _TOP_LEVEL
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL)}")
    if "family" not in cfg:
        raise ConfigError(f"{path}: missing `family:` (the tokenizer family this variant belongs to)")
    return cfg


def load_variant_config(variant: str) -> DictConfig:
    path = CONFIG_DIR / f"{variant}.yaml"
    if not path.is_file():
        raise ConfigError(f"no config for variant {variant!r} (looked for {path}); see `zoo list`")
    return _read(str(path))


def load_config_file(path: str | Path) -> DictConfig:
    return _read(str(Path(path).resolve()))


def plain_config(config: Any) -> Any:
    """An upstream config as plain Python containers (OmegaConf nodes resolved), so converters read one type."""
    if isinstance(config, DictConfig) or type(config).__name__ == "ListConfig":
        return OmegaConf.to_container(config, resolve=True)
    return config


def _dotted(overrides: dict[str, Any]) -> DictConfig:
    cfg = OmegaConf.create({})
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def model_config(config_class: type, base: Any, overrides: dict[str, Any] | None = None, where: str = "") -> Any:
    """Merge `base` and dotted `overrides` onto the family's dataclass schema; return the dataclass."""
    if not dataclasses.is_dataclass(config_class):
        raise ConfigError(f"{config_class!r} is not a dataclass; families declare configs as dataclasses")
    if dataclasses.is_dataclass(base) and not isinstance(base, type):
        base = dataclasses.asdict(base)
    try:
        schema = OmegaConf.structured(config_class)
        merged = OmegaConf.merge(schema, base or {}, _dotted(overrides or {}))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        msg = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", None)
        raise ConfigError(
            f"bad config for {where or config_class.__name__}: {msg}"
            + (f" (key `{key}`)" if key else "")
            + f". Valid keys: {', '.join(f.name for f in dataclasses.fields(config_class))}"
        ) from None

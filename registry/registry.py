"""Names -> tokenizer classes, variant configs and converters.

Families register themselves at the bottom of their own file (`register_tokenizer`,
`register_converter`); variants' hyperparameters live in `configs/<variant>.yaml`. This module
imports no family: `_load_families()` imports the `zoo` package by name the first time a lookup needs
the families registered.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from registry.config import load_variant_config, model_config, plain_config, variant_names
from registry.errors import ConfigError

_FAMILIES: dict[str, type] = {}
_VARIANTS: dict[str, str] = {}  # variant name -> family name
_CONVERTERS: dict[str, Callable[..., Any]] = {}


@dataclass
class VariantInfo:
    name: str
    family: str
    modality: str
    description: str = ""
    pretrained: bool = False
    upstream: dict[str, Any] = field(default_factory=dict)


def _load_families() -> None:
    if not _FAMILIES:
        importlib.import_module("zoo")


def register_tokenizer(cls: type, variants: Iterable[str] = ()) -> type:
    """Register a family class (its `family` attribute is the name) and the variants it serves."""
    name = getattr(cls, "family", "")
    if not name:
        raise ConfigError(f"{cls.__name__} has no `family` name; set the class attribute before registering")
    if name in _FAMILIES and _FAMILIES[name] is not cls:
        raise ConfigError(f"family {name!r} is registered twice ({_FAMILIES[name].__name__}, {cls.__name__})")
    _FAMILIES[name] = cls
    known = set(variant_names())
    for variant in variants:
        if variant not in known:
            raise ConfigError(f"variant {variant!r} of {name} has no configs/{variant}.yaml")
        _VARIANTS[variant] = name
    return cls


def register_converter(family: str, fn: Callable[..., Any] | None = None) -> Any:
    """Register `fn(upstream_state_dict, upstream_config) -> Tokenizer` for a family (decorator too)."""

    def add(f: Callable[..., Any]) -> Callable[..., Any]:
        _CONVERTERS[family] = f
        return f

    return add(fn) if fn is not None else add


def family_class(name: str) -> type:
    _load_families()
    if name not in _FAMILIES:
        raise ConfigError(f"unknown tokenizer family {name!r}; known families: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def families() -> list[str]:
    _load_families()
    return sorted(_FAMILIES)


def variant_family(variant: str) -> str:
    _load_families()
    if variant not in _VARIANTS:
        close = fnmatch.filter(_VARIANTS, f"*{variant}*")[:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else " See `zoo list`."
        raise ConfigError(f"unknown tokenizer {variant!r}.{hint}")
    return _VARIANTS[variant]


def variant_info(variant: str) -> VariantInfo:
    family = variant_family(variant)
    cfg = load_variant_config(variant)
    cls = _FAMILIES[family]
    return VariantInfo(
        name=variant,
        family=family,
        modality=str(cfg.get("modality") or getattr(cls, "modality", "")),
        description=str(cfg.get("description") or ""),
        pretrained=bool(cfg.get("upstream") or cfg.get("checkpoint")),
        upstream=dict(cfg.get("upstream") or {}),
    )


def list_tokenizers(
    pattern: str | None = None, modality: str | None = None, pretrained: bool | None = None
) -> list[str]:
    """Registered variant names, filtered by a shell wildcard, a modality and pretrained-ness."""
    _load_families()
    names = sorted(_VARIANTS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    out = []
    for n in names:
        info = variant_info(n)
        if modality and info.modality != modality:
            continue
        if pretrained is not None and info.pretrained != pretrained:
            continue
        out.append(n)
    return out


def create_tokenizer(name: str, **overrides: Any) -> Any:
    """A randomly initialised tokenizer of a registered variant; overrides replace model config keys."""
    family = variant_family(name)
    cls = _FAMILIES[family]
    config = model_config(cls.config_class, load_variant_config(name).get("model") or {}, overrides, where=name)
    tok = cls(config)
    tok.variant = name
    return tok


def build(family: str, config: Any, variant: str | None = None) -> Any:
    cls = family_class(family)
    tok = cls(model_config(cls.config_class, config, where=variant or family))
    tok.variant = variant
    return tok


def convert(family: str, upstream_state_dict: dict[str, Any], upstream_config: Any = None, **kwargs: Any) -> Any:
    """Build our tokenizer from an upstream state dict (upstream key names) and upstream config."""
    _load_families()
    if family not in _CONVERTERS:
        raise ConfigError(
            f"no converter registered for {family!r}; families with converters: {', '.join(sorted(_CONVERTERS))}"
        )
    return _CONVERTERS[family](upstream_state_dict, plain_config(upstream_config), **kwargs)


def converters() -> list[str]:
    _load_families()
    return sorted(_CONVERTERS)

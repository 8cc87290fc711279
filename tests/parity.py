"""Loading the upstream parity fixtures of ../shared/parity (see its README.md).

A test calls `load_case("wavtokenizer")`; when the fixture folder is absent the test is skipped with a
sentence that says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
PARITY_ROOT = Path(os.environ.get("TOKENZOO_PARITY", REPO.parent / "shared" / "parity"))


@dataclass
class Case:
    path: Path
    manifest: dict[str, Any]
    io: dict[str, torch.Tensor]

    @property
    def upstream_config(self) -> Any:
        return self.manifest.get("upstream_config")

    @property
    def container(self) -> list[str]:
        return list(self.manifest.get("container") or [])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The upstream state dict (upstream key names), drawn deterministically by fill.py."""
        fill = _fill_module()
        stored = load_file(str(self.path / "stored.safetensors"))
        return fill.materialize(self.manifest, stored)


def _fill_module() -> Any:
    spec = importlib.util.spec_from_file_location("tokenzoo_parity_fill", PARITY_ROOT / "fill.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def case_path(family: str, case: str = "a") -> Path:
    return PARITY_ROOT / family / case


def load_case(family: str, case: str = "a") -> Case:
    path = case_path(family, case)
    if not (path / "manifest.json").is_file():
        pytest.skip(f"parity fixture {path} is absent (set TOKENZOO_PARITY to the shared/parity folder)")
    manifest = json.loads((path / "manifest.json").read_text())
    io = load_file(str(path / "io.safetensors"))
    return Case(path=path, manifest=manifest, io=io)


def assert_ids_match(ours: torch.Tensor, upstream: torch.Tensor, tie_mask: torch.Tensor | None) -> None:
    ours, upstream = ours.long().cpu(), upstream.long().cpu()
    assert ours.shape == upstream.shape, f"ids shape {tuple(ours.shape)} != upstream {tuple(upstream.shape)}"
    mask = torch.ones_like(upstream, dtype=torch.bool) if tie_mask is None else ~tie_mask.bool().cpu()
    bad = (ours != upstream) & mask
    assert not bool(bad.any()), f"{int(bad.sum())} of {int(mask.sum())} ids differ outside tie_mask"


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    return float((a.double().cpu() - b.double().cpu()).abs().max())

"""Push to and load from a Hub-compatible server on 127.0.0.1 with the real huggingface_hub client."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import registry
import tests.toy_family  # noqa: F401
import zoo
from tests.hub_server import HubServer


def _reload_hf(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path, offline: bool = False) -> None:
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setenv("HF_TOKEN", "test-token")
    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)


def test_push_then_load_then_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    tok = registry.build("toyvq", {}).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    want = tok.encode(x).ids
    with HubServer() as hub:
        _reload_hf(monkeypatch, hub.endpoint, tmp_path / "hf")
        tok.push_to_hub("tester/toy-tokenizer")
        files = hub.state.resolve("tester/toy-tokenizer", "main")[1]
        assert set(files) == {"config.json", "model.safetensors", "README.md"}
        assert b"library_name: tokenzoo" in files["README.md"]
        back = zoo.from_pretrained("hf-hub:tester/toy-tokenizer")
        assert torch.equal(back.encode(x).ids, want)
    # the server is gone: the second load must come from the cache
    _reload_hf(monkeypatch, "http://127.0.0.1:9", tmp_path / "hf", offline=True)
    again = zoo.from_pretrained("hf-hub:tester/toy-tokenizer")
    assert torch.equal(again.encode(x).ids, want)
    _reload_hf(monkeypatch, "https://huggingface.co", tmp_path / "unused")


def test_pinned_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    first = registry.build("toyvq", {}).eval()
    torch.manual_seed(1)
    second = registry.build("toyvq", {}).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with HubServer() as hub:
        _reload_hf(monkeypatch, hub.endpoint, tmp_path / "hf")
        oid = first.push_to_hub("tester/revs")
        second.push_to_hub("tester/revs")
        pinned = zoo.from_pretrained(f"hf-hub:tester/revs@{oid}")
        latest = zoo.from_pretrained("hf-hub:tester/revs")
        assert torch.equal(pinned.encode(x).ids, first.encode(x).ids)
        assert torch.equal(latest.encode(x).ids, second.encode(x).ids)
    _reload_hf(monkeypatch, "https://huggingface.co", tmp_path / "unused")


def test_cli_push_and_info(tmp_path: Path) -> None:
    torch.manual_seed(0)
    registry.build("toyvq", {}).save_pretrained(tmp_path / "ckpt")
    with HubServer() as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"), HF_TOKEN="t",
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        code = "import tests.toy_family, sys; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
        out = subprocess.run([sys.executable, "-c", code, "push", str(tmp_path / "ckpt"), "tester/cli"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "pushed" in out.stdout
        assert "config.json" in hub.state.resolve("tester/cli", "main")[1]

"""Tokens, registry, configs, checkpoints: the spine every family stands on."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import registry
import tests.toy_family  # noqa: F401  (registers the toy family)
import zoo
from registry.checkpoint import read_checkpoint
from registry.config import model_config
from zoo.tokens import Tokens


def toy() -> zoo.Tokenizer:
    torch.manual_seed(0)
    return registry.build("toyvq", {}).eval()


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


# -- Tokens ------------------------------------------------------------------------------------
def test_sequence_round_trip_multi_codebook() -> None:
    ids = torch.randint(0, 7, (3, 5, 4), generator=torch.Generator().manual_seed(0))
    tokens = Tokens(ids=ids, modality="audio", codebook_sizes=(7, 7, 7, 7), grid=(5,))
    seq = tokens.to_sequence()
    assert seq.shape == (3, 20)
    # codebook q occupies [7q, 7q + 7): position-major, codebooks interleaved
    assert torch.equal(seq[:, 1], ids[:, 0, 1] + 7)
    assert torch.equal(Tokens.from_sequence(seq, tokens).ids, ids)
    with pytest.raises(zoo.InputError, match="outside their codebook"):
        Tokens.from_sequence(seq.clamp(max=6), tokens)
    with pytest.raises(zoo.InputError, match="has 20 ids"):
        Tokens.from_sequence(seq[:, :-1], tokens)


def test_tokens_save_load(tmp_path: Path) -> None:
    tokens = toy().encode(images())
    tokens.meta["note"] = "x"
    path = tokens.save(tmp_path / "t.safetensors")
    back = Tokens.load(path)
    assert torch.equal(back.ids, tokens.ids) and back.grid == tokens.grid and back.meta == {"note": "x"}
    assert not list(tmp_path.glob(".*tmp"))
    save_file({"a": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(zoo.MediaError, match="without tokenzoo metadata"):
        Tokens.load(tmp_path / "plain.safetensors")


def test_continuous_tokens_refuse_sequence() -> None:
    tokens = Tokens(ids=None, latent=torch.zeros(1, 4, 4, 8), modality="image", grid=(4, 4))
    with pytest.raises(zoo.InputError, match="continuous"):
        tokens.to_sequence()


# -- input and id checks -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(2, 3, 3, 8, 8), "laid out"),
        (torch.zeros(1, 1, 8, 8), "channels"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating point"),
        ("not a tensor", "torch.Tensor"),
    ],
)
def test_bad_input_is_named(x: object, match: str) -> None:
    with pytest.raises(zoo.InputError, match=match):
        toy().encode(x)


def test_bad_ids_are_named() -> None:
    tok = toy()
    with pytest.raises(zoo.InputError, match=r"\[0, 63\]"):
        tok.decode(torch.full((1, 4, 4), 64))
    with pytest.raises(zoo.InputError, match="integer"):
        tok.decode(torch.zeros(1, 4, 4))


# -- configs -----------------------------------------------------------------------------------
def test_structured_config_refuses_unknown_and_mistyped_keys() -> None:
    cls = registry.family_class("toyvq").config_class
    assert model_config(cls, {"channels": 8}).channels == 8
    with pytest.raises(zoo.ConfigError, match="chanels"):
        model_config(cls, {"chanels": 8})
    with pytest.raises(zoo.ConfigError, match="channels"):
        model_config(cls, {"channels": "wide"})


def test_unknown_names_are_explained() -> None:
    with pytest.raises(zoo.ConfigError, match="unknown tokenizer"):
        zoo.create_tokenizer("no-such-tokenizer")
    with pytest.raises(zoo.ConfigError, match="no converter"):
        registry.convert("no-such-family", {}, {})


def test_every_registered_variant_builds_and_has_a_spec() -> None:
    for name in zoo.list_tokenizers():
        info = zoo.info(name)
        assert info["spec"].modality in ("image", "video", "audio"), name
        assert info["family"] in registry.families()


def test_list_filters() -> None:
    names = zoo.list_tokenizers()
    for modality in ("image", "video", "audio"):
        sub = zoo.list_tokenizers(modality=modality)
        assert set(sub) <= set(names)
        assert all(registry.variant_info(n).modality == modality for n in sub)
    assert zoo.list_tokenizers("definitely-not-*") == []


# -- checkpoints -------------------------------------------------------------------------------
def test_save_load_identical(tmp_path: Path) -> None:
    tok = toy()
    x = images()
    tok.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors", "README.md"}
    back = zoo.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(back.encode(x).ids, tok.encode(x).ids)
    assert torch.equal(back.decode(back.encode(x)), tok.decode(tok.encode(x)))
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "library_name: tokenzoo" in card and "## Token spec" in card


def test_save_over_existing_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = toy()
    tok.save_pretrained(tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()

    import registry.hub as hub

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hub, "save_model", boom)
    with pytest.raises(OSError, match="disk full"):
        tok.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "no temporary folder left behind"


def _tamper(tmp_path: Path, how: str) -> Path:
    toy().save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(str(weights))
    if how == "missing":
        state.pop("encoder.weight")
        save_file(state, str(weights))
    elif how == "shape":
        state["encoder.weight"] = torch.zeros(1, 2, 3)
        save_file(state, str(weights))
    elif how == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif how == "pickle":
        weights.unlink()
        torch.save(state, tmp_path / "ckpt" / "pytorch_model.bin")
    return tmp_path / "ckpt"


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("missing", "missing keys.*encoder.weight"),
        ("shape", "shape mismatches.*encoder.weight"),
        ("truncated", "truncated"),
        ("pickle", "pickle files are never loaded"),
    ],
)
def test_tampered_checkpoint_is_refused_clearly(tmp_path: Path, how: str, match: str) -> None:
    with pytest.raises(zoo.CheckpointError, match=match):
        zoo.from_pretrained(_tamper(tmp_path, how))


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    with pytest.raises(zoo.CheckpointError, match="weights_only"):
        read_checkpoint(path)


def test_weights_only_checkpoint_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    state = registry.dig(read_checkpoint(path), None)
    assert list(state) == ["w"]


def test_config_json_records_family_and_spec(tmp_path: Path) -> None:
    toy().save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["family"] == "toyvq" and config["spec"]["codebook_sizes"] == [64]

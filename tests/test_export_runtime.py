"""The torch-free pieces of export/ against their PyTorch twins: tokens, resampling, the flow sampler,
manifests and the shared error classes (no ONNX export here; see test_export_walk / test_export_cli)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from export import NumpyTokens, OnnxTokenizer, sampler
from export import errors as export_errors
from export.manifest import FORMAT, MANIFEST_NAME, read_manifest, state_dict_sha256
from export.resample import resample as np_resample
from modalities.resample import resample as torch_resample
from registry.errors import CheckpointError, ConfigError, InputError
from zoo.layers import flow
from zoo.tokens import TOKENS_FORMAT, Tokens


def multi_codebook_tokens() -> Tokens:
    ids = torch.randint(0, 5, (2, 3, 4), generator=torch.Generator().manual_seed(0))
    return Tokens(
        ids=ids, modality="audio", codebook_sizes=(5, 7, 9, 11), grid=(3,), lengths=torch.tensor([3, 2]),
        original_size=torch.tensor([30, 17]), extras={"prompt_frames": torch.tensor([0, 0])},
        meta={"sample_rate": 24000}, producer="x", version="0.1.0",
    )


def test_error_classes_are_zoos() -> None:
    assert export_errors.InputError is zoo.InputError
    assert export_errors.ExportError is zoo.ExportError
    assert issubclass(export_errors.CheckpointError, zoo.ZooError)


def test_numpy_tokens_match_torch_tokens() -> None:
    tokens = multi_codebook_tokens()
    np_tokens = NumpyTokens.from_torch(tokens)
    assert np.array_equal(np_tokens.to_sequence(), tokens.to_sequence().numpy())
    assert np_tokens.offsets == tokens.offsets and np_tokens.vocab_size == tokens.vocab_size
    assert np_tokens.multi_codebook and np_tokens.batch_size == 2
    back = NumpyTokens.from_sequence(np_tokens.to_sequence(), np_tokens)
    assert np.array_equal(back.ids, np_tokens.ids)
    item = np_tokens.item(1)
    assert item.ids.shape == (1, 2, 4) and item.grid == (2,)
    assert np.array_equal(item.ids, tokens.item(1).ids.numpy())
    again = np_tokens.to_torch()
    assert torch.equal(again.ids, tokens.ids) and torch.equal(again.lengths, tokens.lengths)
    assert again.codebook_sizes == tokens.codebook_sizes and again.meta == tokens.meta


def test_numpy_tokens_files_are_zoo_tokens_files(tmp_path: Path) -> None:
    tokens = multi_codebook_tokens()
    tokens.save(tmp_path / "a.safetensors")
    loaded = NumpyTokens.load(tmp_path / "a.safetensors")
    assert np.array_equal(loaded.ids, tokens.ids.numpy()) and loaded.grid == (3,)
    assert np.array_equal(loaded.extras["prompt_frames"], [0, 0])
    loaded.replace(meta={"written": "by numpy"}).save(tmp_path / "b.safetensors")
    again = Tokens.load(tmp_path / "b.safetensors")
    assert torch.equal(again.ids, tokens.ids) and again.meta == {"written": "by numpy"}
    assert TOKENS_FORMAT == "tokenzoo.tokens/1"


def test_numpy_tokens_bad_sequences_and_files(tmp_path: Path) -> None:
    np_tokens = NumpyTokens.from_torch(multi_codebook_tokens())
    with pytest.raises(InputError, match="has 12 ids"):
        NumpyTokens.from_sequence(np.zeros((1, 5), dtype=np.int64), np_tokens)
    with pytest.raises(InputError, match="outside their codebook"):
        NumpyTokens.from_sequence(np.full((1, 12), 40, dtype=np.int64), np_tokens)
    with pytest.raises(zoo.MediaError, match="no such tokens file"):
        NumpyTokens.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(zoo.MediaError, match="not a readable"):
        NumpyTokens.load(tmp_path / "junk.safetensors")
    continuous = NumpyTokens(ids=None, latent=np.zeros((1, 2, 2, 3), np.float32), modality="image", grid=(2, 2))
    with pytest.raises(InputError, match="continuous tokens"):
        continuous.to_sequence()


@pytest.mark.parametrize(("rate", "target"), [(44100, 24000), (16000, 24000), (24000, 16000), (8000, 8000)])
def test_numpy_resampler_equals_modalities_resample(rate: int, target: int) -> None:
    x = np.random.default_rng(rate).standard_normal((2, 1777)).astype(np.float32) * 0.3
    ours = np_resample(x, rate, target)
    theirs = torch_resample(torch.from_numpy(x), rate, target).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert float(np.abs(ours - theirs).max()) <= 1e-6


@pytest.mark.parametrize("schedule", ["linear", "pow_0.25", "shift_3.0", "cosine"])
def test_time_grid_equals_flows(schedule: str) -> None:
    assert np.allclose(sampler.time_grid(7, schedule), flow.time_grid(7, schedule).numpy(), atol=1e-15)


@pytest.mark.parametrize(("solver", "scale", "rescale", "interval"), [
    ("euler", 1.0, 0.0, None), ("midpoint", 2.0, 0.75, None), ("rk2", 1.5, 0.0, (0.2, 0.7)), ("heun", 3.0, 0.5, None),
])
def test_numpy_sampler_follows_the_torch_sampler(solver: str, scale: float, rescale: float, interval) -> None:
    weights = torch.randn(6, 6, generator=torch.Generator().manual_seed(1)) * 0.3

    def cond_t(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ weights) + t[:, None, None]

    def uncond_t(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.tanh(x @ weights.T) - t[:, None, None]

    def cond_n(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return cond_t(torch.from_numpy(x), torch.from_numpy(t)).numpy()

    def uncond_n(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return uncond_t(torch.from_numpy(x), torch.from_numpy(t)).numpy()

    noise = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(2))
    ref = flow.sample(cond_t, noise, 5, "pow_0.5", solver, cfg_scale=scale, rescale=rescale, uncond_fn=uncond_t,
                      cfg_interval=interval, rescale_per_sample=True)
    ours = sampler.sample(cond_n, noise.numpy(), sampler.time_grid(5, "pow_0.5"), solver, cfg_scale=scale,
                          rescale=rescale, uncond=uncond_n, cfg_interval=interval)
    assert ours.dtype == np.float32
    assert float(np.abs(ours - ref.numpy()).max()) <= 1e-5


def test_sampler_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="solver"):
        sampler.sample(lambda x, t: x, np.zeros((1, 2), np.float32), [0.0, 1.0], "leapfrog")
    with pytest.raises(ConfigError, match="rescale"):
        sampler.sample(lambda x, t: x, np.zeros((1, 2), np.float32), [0.0, 1.0], rescale=2.0)
    with pytest.raises(InputError, match="positive integer"):
        sampler.time_grid(0)
    with pytest.raises(ConfigError, match="schedule"):
        sampler.time_grid(3, "pow_x")


def test_missing_or_foreign_manifests_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="zoo export"):
        OnnxTokenizer(tmp_path / "nothing-here")
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(CheckpointError, match="not a tokenzoo ONNX manifest"):
        read_manifest(tmp_path)
    manifest = {"format": FORMAT, "family": "x", "spec": {}, "runtime": {"handler": "tensor"},
                "graphs": {"encoder": {"file": "encoder.onnx"}}}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="missing"):
        read_manifest(tmp_path)


def test_unknown_runtime_recipe_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "encoder.onnx").write_bytes(b"")
    manifest = {"format": FORMAT, "family": "x", "spec": {"modality": "audio"}, "runtime": {"handler": "teleport"},
                "graphs": {"encoder": {"file": "encoder.onnx"}}}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="teleport"):
        OnnxTokenizer(tmp_path)


def test_state_dict_hash_sees_every_byte_and_name() -> None:
    state = {"a": torch.zeros(3), "b": torch.ones(2, dtype=torch.bfloat16)}
    base = state_dict_sha256(state)
    assert base == state_dict_sha256(dict(reversed(list(state.items()))))
    assert base != state_dict_sha256({"a": torch.tensor([0.0, 0.0, 1e-30]), "b": state["b"]})
    assert base != state_dict_sha256({"c": state["a"], "b": state["b"]})

"""`zoo train`: a tiny config trains, its loss falls, a resumed run is the same run, the checkpoint loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from registry.errors import ConfigError, InputError
from zoo import train as T

IMAGE = "modalities/samples/coffee.jpg"
HELDOUT_IMAGE = "modalities/samples/chelsea.png"


def _image_config(out: Path, **extra: object) -> dict:
    cfg = {
        "name": "test-image",
        "base": "uniwetok-tiny",
        "out": str(out),
        "seed": 3,
        "log_every": 1,
        "save_every": 2,
        "data": {"train": [IMAGE], "heldout": [HELDOUT_IMAGE], "crop": 32, "batch_size": 2,
                 "max_heldout_pixels": 96 * 96 * 4},
        "optim": {"steps": 6, "warmup_steps": 1, "lr": 2e-3, "ema_decay": 0.5},
        "card": {"license": "cc0-1.0", "body": "test body text"},
    }
    cfg.update(extra)
    return cfg


def _fixed_loss(trainer: T.Trainer, x: torch.Tensor) -> float:
    trainer.tok.eval()
    torch.manual_seed(0)  # the same decoder noise for both measurements
    with torch.no_grad():
        out = trainer.tok(x)
        recon, target = T._match(out["reconstruction"], x)
        return float(sum(trainer.recon_loss(recon, target).values()))


def test_loss_decreases(tmp_path: Path) -> None:
    import modalities

    # One 32x32 picture and 32 px crops without flips: every batch is the same, so the loss must fall.
    small = torch.nn.functional.interpolate(modalities.image.load(IMAGE)[..., :200, :200], size=(32, 32), mode="area")
    modalities.image.save(small[0], tmp_path / "small.png")
    cfg = _image_config(tmp_path / "run", optim={"steps": 12, "warmup_steps": 1, "lr": 3e-3, "ema_decay": 0.5})
    cfg["data"].update(train=[str(tmp_path / "small.png")], flip=False)
    trainer = T.Trainer(T.load_train_config(cfg))
    x = trainer.sampler.batch()
    before = _fixed_loss(trainer, x)
    trainer.fit()
    after = _fixed_loss(trainer, x)
    assert after < 0.7 * before, (before, after)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 13))
    assert all(0 < r["usage"] <= 1 and r["lr"] > 0 and r["grad_norm"] >= 0 for r in rows if "loss" in r)


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    straight = T.train(_image_config(tmp_path / "a"))
    T.train(_image_config(tmp_path / "b", stop_after=3))
    state = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert state["step"] == 3
    resumed = T.train(_image_config(tmp_path / "b"))
    a = zoo.from_pretrained(str(straight))
    b = zoo.from_pretrained(str(resumed))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6, msg=key)
    log = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 3} in log
    # stop_after=0 trains nothing more: it rewrites the same checkpoint from the saved state.
    again = T.train(_image_config(tmp_path / "b", stop_after=0))
    assert torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)["step"] == 6
    for key, value in zoo.from_pretrained(str(again)).state_dict().items():
        torch.testing.assert_close(value, sb[key], rtol=0, atol=0, msg=key)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    first = [r["loss"] for r in log if "loss" in r]
    reference = [json.loads(line)["loss"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert first == pytest.approx(reference, rel=1e-5)


def test_checkpoint_loads_with_from_pretrained_and_carries_heldout_metrics(tmp_path: Path) -> None:
    path = T.train(_image_config(tmp_path / "run", optim={"steps": 2, "warmup_steps": 1}))
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    tok = zoo.from_pretrained(str(path))
    assert tok.name == "test-image"
    x = torch.rand(1, 3, 40, 48) * 2 - 1
    y = tok.decode(tok.encode(x), generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert tok.metrics["heldout_items"] == 1
    assert HELDOUT_IMAGE in tok.metrics["heldout_per_file"]
    assert 0 < tok.metrics["heldout_psnr_db"] < 60
    card = (path / "README.md").read_text()
    assert "Held-out media" in card and "chelsea.png" in card and "test body text" in card
    assert tok.source["train_files"] == [IMAGE]


def test_audio_training_with_spectral_losses_and_discriminator(tmp_path: Path) -> None:
    cfg = {
        "name": "test-audio",
        "base": "wavtokenizer-tiny",
        "model": {"sample_rate": 16000},
        "out": str(tmp_path / "run"),
        "log_every": 1,
        "data": {"train": ["modalities/samples/guitar_em9.flac"], "heldout": ["modalities/samples/arctic_a0009.wav"],
                 "segment": 0.1, "batch_size": 2, "max_heldout_seconds": 1.0},
        "optim": {"steps": 3, "warmup_steps": 1},
        "loss": {"gan": {"weight": 1.0, "width": 4}},
    }
    path = T.train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"stft", "mel", "adversarial", "feature_matching", "discriminator"} <= set(rows[-1])
    tok = zoo.from_pretrained(str(path))
    assert tok.spec.sample_rate == 16000
    metrics = tok.metrics
    assert metrics["heldout_mel_distance_silence_baseline"] > 0
    assert "heldout_si_snr_db" in metrics


def test_cli_train_with_overrides(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from zoo.cli import main

    config = tmp_path / "c.yaml"
    OmegaConf.save(OmegaConf.create(_image_config(tmp_path / "ignored")), config)
    out = tmp_path / "cli"
    assert main(["train", str(config), f"out={out}", "optim.steps=2", "data.heldout=[]"]) == 0
    assert (out / "checkpoint" / "config.json").is_file()
    assert json.loads((out / "checkpoint" / "config.json").read_text())["metrics"]["train_steps"] == 2
    assert main(["train", str(config), "optim.steps"]) == 2  # not key=value: a plain error, exit 2


def test_bad_configs_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bad training config"):
        T.load_train_config(_image_config(tmp_path, optimiser={"lr": 1}))
    with pytest.raises(ConfigError, match="base"):
        T.build_model(T.load_train_config({"name": "x"}))
    with pytest.raises(ConfigError, match="held-out media are also in the training set"):
        T.Trainer(T.load_train_config(_image_config(tmp_path, data={"train": [IMAGE], "heldout": [IMAGE]})))
    with pytest.raises(InputError, match="no image files match"):
        T.resolve_media(["does/not/exist/*.png"], "image")
    with pytest.raises(InputError, match="not installed"):
        T.resolve_media(["pkg:no_such_package_here/x.png"], "image")
    with pytest.raises(ConfigError, match="does not exist"):
        T.load_train_config(tmp_path / "missing.yaml")


def test_package_media_paths_resolve() -> None:
    pytest.importorskip("skimage", reason="scikit-image (a dev extra) ships the training photographs")
    (path,) = T.resolve_media(["pkg:skimage/data/camera.png"], "image")
    assert path.is_file() and path.name == "camera.png"

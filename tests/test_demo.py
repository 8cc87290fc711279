"""`zoo demo` and the default checkpoints it uses: offline, honest numbers, a report whose PNGs are not blank."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.checkpoints import CHECKPOINT_DIR, DEFAULTS


@pytest.mark.parametrize("name", sorted(DEFAULTS.values()))
def test_default_checkpoint_is_bundled_small_and_loads_by_name(name: str) -> None:
    folder = CHECKPOINT_DIR / name
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in folder.iterdir()}
    assert sum(p.stat().st_size for p in folder.iterdir()) < 10_000_000  # "a few MB": small enough to ship
    assert name in zoo.list_tokenizers(pretrained=True)
    tok = zoo.from_pretrained(name)  # from the package folder: no network
    assert tok.name == name
    config = json.loads((folder / "config.json").read_text())
    assert config["variant"] == name
    train, heldout = set(config["source"]["train_files"]), set(config["source"]["heldout_files"])
    assert heldout and not train & heldout
    card = (folder / "README.md").read_text()
    assert "Held-out media" in card and "How far from the published models" in card and "licence" in card.lower()


@pytest.mark.heavy
@pytest.mark.parametrize("name", sorted(DEFAULTS.values()))
def test_card_metrics_are_what_encode_decode_measures_on_the_heldout_media(name: str) -> None:
    from zoo.train import DataConfig, evaluate

    tok = zoo.from_pretrained(name)
    source = tok.source
    root = Path(zoo.__file__).resolve().parent.parent
    files = [root / f for f in source["heldout_files"]]
    present = [f for f in files if f.is_file()]
    if not present:
        pytest.skip(f"none of {name}'s held-out media are here (scripts/prepare_train_media.py gathers them)")
    data = DataConfig(**{k: v for k, v in source["train_config"]["data"].items() if k in DataConfig.__annotations__})
    measured = evaluate(tok, present, data)
    # Per file for the media at hand (the bundled samples always; gathered media when prepared) ...
    for path in present:
        key_path = str(path.relative_to(root))
        for key, value in tok.metrics["heldout_per_file"][key_path].items():
            # PESQ's level/time alignment reacts to float-level differences between runs: a looser bound.
            tol = 0.02 if "pesq" in key else 1e-3
            assert measured["heldout_per_file"][key_path][key] == pytest.approx(value, rel=1e-3, abs=tol), key
    # ... and the card's averages when every held-out file is here.
    if len(present) == len(files):
        for key, value in tok.metrics.items():
            if key.startswith("heldout_") and isinstance(value, float):
                tol = 0.02 if "pesq" in key else 1e-3
                assert measured[key] == pytest.approx(value, rel=1e-3, abs=tol), key


def _not_blank(path: Path) -> None:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32)
    assert arr.size > 100 * 100 and arr.std() > 5, f"{path.name} looks blank (std {arr.std():.2f})"


@pytest.mark.heavy
def test_demo_writes_the_report_with_real_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    assert f"report: {out.resolve() / 'report.md'}" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    pngs = sorted(out.glob("*.png"))
    kinds = {"image_grid", "spectrograms", "usage", "video_strip"}
    assert all(any(k in p.name for p in pngs) for k in kinds), [p.name for p in pngs]
    for png in pngs:
        assert png.name in report and png.name in (out / "report.html").read_text()
        _not_blank(png)
    assert list(out.glob("*.wav")) and list(out.glob("*.mp4")) and len(list(out.glob("*reconstruction.png"))) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    speech = next(v for k, v in metrics.items() if k.startswith("Speech"))
    assert speech["mel distance"] < speech["mel distance of silence (baseline)"]
    images = next(v for k, v in metrics.items() if k.startswith("Images"))
    assert 5 < images["mean PSNR (dB)"] < 60
    for name in DEFAULTS.values():
        assert f"`{name}`" in report


def test_demo_with_an_unknown_model_is_a_plain_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.cli import main

    assert main(["demo", "--out", str(tmp_path), "--model", "no-such-tokenizer"]) == 2
    assert "unknown tokenizer" in capsys.readouterr().err


def test_demo_sections_for_a_named_image_model(tmp_path: Path) -> None:
    from zoo import demo

    tok = zoo.from_pretrained(DEFAULTS["image"])
    with torch.inference_mode():
        section = demo._images(tok, tmp_path, "x")
    assert set(section.metrics) >= {"mean PSNR (dB)", "mean SSIM", "codes used"}
    assert (tmp_path / section.plots["image grid (centre squares)"]).is_file()

"""Train a tokenizer from an OmegaConf YAML (`zoo train CONFIG.yaml key=value ...`).

One loop for every family: the family's `forward(x)` gives the reconstruction and the quantizer's
losses; this module adds the per-modality reconstruction losses (`zoo.losses`), AdamW with warm-up
and cosine decay, gradient clipping, an EMA of the weights (what gets evaluated and saved), an
optional discriminator, JSON-lines metrics with codebook usage, and resumable state. Every random
draw comes from seeded generators whose states are saved, so a resumed run continues the same run.
At the end the EMA weights are evaluated on held-out media through the public encode/decode path
and written as a tokenzoo checkpoint whose model card carries those numbers.
"""

from __future__ import annotations

import glob
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from registry.errors import ConfigError, InputError

_MEDIA_SUFFIXES = {
    "image": {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"},
    "audio": {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".m4a", ".opus"},
    "video": {".mp4", ".mkv", ".webm", ".mov", ".avi", ".gif"},
}


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # files, folders or globs (relative to the repo root or cwd)
    heldout: list[str] = field(default_factory=list)
    crop: int = 64  # image/video crop side in pixels
    frames: int = 5  # video clip length
    segment: float = 1.0  # audio training segment in seconds
    batch_size: int = 8
    flip: bool = True  # random horizontal flips (images/videos)
    gain_db: float = 6.0  # random gain range for audio (+-dB)
    max_heldout_seconds: float = 10.0
    max_heldout_pixels: int = 512 * 512  # larger held-out images are centre-cropped to a square of this area


@dataclass
class OptimConfig:
    steps: int = 1000
    lr: float = 2e-4
    min_lr_ratio: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_start: int = 0


@dataclass
class GanConfig:
    weight: float = 0.0  # 0 turns the discriminator off
    feature_weight: float = 2.0
    start_step: int = 0
    width: int = 16
    lr: float = 2e-4


@dataclass
class LossConfig:
    l1: float = 1.0
    l2: float = 0.0
    stft: float = 1.0
    mel: float = 15.0
    waveform_l1: float = 0.0
    quantizer: float = 1.0
    # Binary (sign) tokens: push each bit's mean over a batch towards 0 so no bit sticks at one sign.
    bit_balance: float = 0.0
    gan: GanConfig = field(default_factory=GanConfig)


@dataclass
class TrainConfig:
    """The training YAML's schema; see configs/train/*.yaml for examples."""

    name: str = "trained"  # variant name written into the checkpoint
    base: str | None = None  # a registered variant whose family and model config to start from
    family: str | None = None  # or a family name with `model` given in full
    model: dict[str, Any] = field(default_factory=dict)  # model config keys (override `base`'s)
    out: str = "runs/trained"
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    log_every: int = 10
    save_every: int = 200
    max_minutes: float | None = None  # stop early (and still evaluate/save) after this wall time
    # Stop this invocation after so many steps (run again to resume); 0 only re-evaluates and rewrites the
    # checkpoint and its card from the saved state (e.g. after editing the card text).
    stop_after: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    card: dict[str, Any] = field(default_factory=dict)  # description, license, data sources, body text


# -- configuration -------------------------------------------------------------------------------------


def load_train_config(config: str | Path | dict[str, Any] | DictConfig, overrides: list[str] | None = None) -> Any:
    """The YAML (or dict) merged onto the schema, with `key=value` overrides applied last."""
    try:
        schema = OmegaConf.structured(TrainConfig)
        base = OmegaConf.load(str(config)) if isinstance(config, str | Path) else OmegaConf.create(config)
        merged = OmegaConf.merge(schema, base, OmegaConf.from_dotlist(list(overrides or [])))
        return OmegaConf.to_object(merged)
    except FileNotFoundError:
        raise ConfigError(f"training config {config} does not exist; pass a YAML like configs/train/*.yaml") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"bad training config ({str(exc).splitlines()[0]}); keys are those of zoo.train.TrainConfig "
            "(name, base/family, model, data, optim, loss, card, ...) and overrides look like optim.steps=100"
        ) from None


def build_model(cfg: TrainConfig) -> Any:
    from registry.config import load_variant_config
    from registry.registry import build, variant_family

    if cfg.base:
        family = variant_family(cfg.base)
        model = OmegaConf.merge(load_variant_config(cfg.base).get("model") or {}, cfg.model or {})
    elif cfg.family:
        family, model = cfg.family, OmegaConf.create(cfg.model or {})
    else:
        raise ConfigError("training config needs `base: <registered variant>` or `family: <name>` with `model:`")
    tok = build(family, OmegaConf.to_container(model, resolve=True), variant=cfg.name)
    if not tok.spec.can_decode:
        raise ConfigError(f"{cfg.name}: {family} is encoder-only; training here needs a decoder to reconstruct")
    return tok


# -- data ----------------------------------------------------------------------------------------------


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _package_path(pattern: str) -> str:
    """`pkg:skimage/data/camera.png` -> that file inside the installed package (media that installs with it)."""
    import importlib.util

    package, _, rest = pattern[len("pkg:") :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{pattern!r} names package {package!r}, which is not installed; pip install it first")
    return str(Path(next(iter(spec.submodule_search_locations))) / rest)


def resolve_media(patterns: list[str], modality: str) -> list[Path]:
    """Files named by paths, folders (searched recursively), globs or `pkg:` paths, in a stable order."""
    suffixes = _MEDIA_SUFFIXES[modality]
    found: list[Path] = []
    for pattern in patterns:
        if pattern.startswith("pkg:"):
            pattern = _package_path(pattern)
        candidates = [Path(pattern)] if Path(pattern).is_absolute() else [Path(pattern), _repo_root() / pattern]
        hits: list[Path] = []
        for c in candidates:
            if c.is_dir():
                hits = sorted(p for p in c.rglob("*") if p.suffix.lower() in suffixes)
            elif c.is_file():
                hits = [c]
            else:
                hits = sorted(Path(p) for p in glob.glob(str(c), recursive=True) if Path(p).is_file())
            if hits:
                break
        if not hits:
            raise InputError(f"no {modality} files match {pattern!r}; give files, folders or globs that exist")
        found += [h for h in hits if h.resolve() not in {f.resolve() for f in found}]
    return found


def load_item(path: Path, tok: Any, data: DataConfig, heldout: bool = False) -> Tensor:
    """One media file in the model's canonical layout, (C, H, W) / (C, T, H, W) / (1, N)."""
    import modalities

    spec = tok.spec
    if spec.modality == "image":
        x = modalities.image.load(path, max_pixels=64_000_000)[0]
        if heldout and x.shape[-2] * x.shape[-1] > data.max_heldout_pixels:  # keep evaluation cheap: centre crop
            side = int(data.max_heldout_pixels**0.5)
            h, w = x.shape[-2:]
            top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
            x = x[..., top : top + side, left : left + side]
        return x
    if spec.modality == "audio":
        duration = data.max_heldout_seconds if heldout else None
        x = modalities.audio.load(path, sample_rate=spec.sample_rate, channels="mono", duration=duration)[0]
        return x[:1]
    return modalities.video.load(path, max_frames=64)[0]


class Sampler:
    """Random crops / segments from media held in memory, drawn from one seeded generator."""

    def __init__(
        self, items: list[Tensor], modality: str, data: DataConfig, multiple: int, seed: int, rate: int | None = None
    ) -> None:
        if not items:
            raise InputError("no training media: set data.train to files, folders or globs")
        self.items, self.modality, self.data = items, modality, data
        self.generator = torch.Generator().manual_seed(seed)
        if modality == "audio":
            samples = int(round(data.segment * int(rate or 16000)))
            self.length = max(multiple, samples // multiple * multiple)
        else:
            self.length = max(multiple, data.crop // multiple * multiple)
        self.weights = torch.tensor([float(x.shape[-1] * (x.shape[-2] if modality != "audio" else 1)) for x in items])

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, max(1, high), (1,), generator=self.generator))

    def one(self) -> Tensor:
        x = self.items[int(torch.multinomial(self.weights, 1, generator=self.generator))]
        if self.modality == "audio":
            n = self.length
            if x.shape[-1] < n:
                x = F.pad(x, (0, n - x.shape[-1]))
            start = self._randint(x.shape[-1] - n + 1)
            seg = x[..., start : start + n]
            gain = (torch.rand((), generator=self.generator) * 2 - 1) * self.data.gain_db
            return seg * 10 ** (gain / 20)
        s = self.length
        h, w = x.shape[-2:]
        if min(h, w) < s:
            x = F.pad(x, (0, max(0, s - w), 0, max(0, s - h)), mode="replicate" if x.dim() < 5 else "constant")
            h, w = x.shape[-2:]
        top, left = self._randint(h - s + 1), self._randint(w - s + 1)
        crop = x[..., top : top + s, left : left + s]
        if self.modality == "video":
            t = self.data.frames
            start = self._randint(crop.shape[1] - t + 1)
            crop = crop[:, start : start + t]
        if self.data.flip and bool(torch.rand((), generator=self.generator) < 0.5):
            crop = crop.flip(-1)
        return crop

    def batch(self) -> Tensor:
        return torch.stack([self.one() for _ in range(self.data.batch_size)])


def _multiple(tok: Any, modality: str) -> int:
    spec = tok.spec
    if modality == "audio":
        return int(spec.downsample[0]) if spec.downsample else 1
    return int(spec.downsample[-1]) if spec.downsample else 1


# -- losses --------------------------------------------------------------------------------------------


class ReconstructionLoss(nn.Module):
    """Per-modality reconstruction terms, weighted by the config; returns named parts."""

    def __init__(self, modality: str, loss: LossConfig, sample_rate: int | None) -> None:
        super().__init__()
        from zoo.losses import MelLoss, MultiResolutionSTFTLoss, stft_resolutions

        self.modality, self.cfg = modality, loss
        if modality == "audio":
            rate = int(sample_rate or 24000)
            self.stft = MultiResolutionSTFTLoss(stft_resolutions(rate))
            self.mel = MelLoss(rate, n_fft=max(256, 2 ** round(math.log2(rate / 24000 * 1024))),
                               hop=max(64, 2 ** round(math.log2(rate / 24000 * 256))))

    def forward(self, recon: Tensor, x: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        parts: dict[str, Tensor] = {}
        if self.modality == "audio":
            if cfg.stft:
                parts["stft"] = cfg.stft * self.stft(recon, x)
            if cfg.mel:
                parts["mel"] = cfg.mel * self.mel(recon, x)
            if cfg.waveform_l1:
                parts["waveform_l1"] = cfg.waveform_l1 * (recon - x).abs().mean()
            return parts
        if cfg.l1:
            parts["l1"] = cfg.l1 * (recon - x).abs().mean()
        if cfg.l2:
            parts["l2"] = cfg.l2 * (recon - x).pow(2).mean()
        return parts


def _match(recon: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Trim both to their common extent (codecs may return whole frames only)."""
    slices = tuple(slice(0, min(a, b)) for a, b in zip(recon.shape[2:], x.shape[2:], strict=True))
    return recon[(..., *slices)], x[(..., *slices)]


def _usage(ids: Tensor | None, sizes: tuple[int, ...]) -> dict[str, float]:
    from modalities.metrics import codebook_usage

    if ids is None or not sizes:
        return {}
    ids = ids.detach().cpu()
    per = [ids[..., i] for i in range(ids.shape[-1])] if len(sizes) > 1 and ids.shape[-1] == len(sizes) else [ids]
    stats = [codebook_usage(i, size, histogram=False) for i, size in zip(per, sizes, strict=False)]
    return {
        "usage": sum(s.usage for s in stats) / len(stats),
        "perplexity": sum(s.perplexity for s in stats) / len(stats),
    }


# -- EMA -----------------------------------------------------------------------------------------------


class Ema:
    """Exponential moving average of floating parameters; buffers (e.g. EMA codebooks) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._params = {name for name, _ in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, start: int) -> None:
        decay = 0.0 if step < start else min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self._params and v.is_floating_point():
                self.shadow[k].lerp_(v.detach(), 1 - decay)
            else:
                self.shadow[k].copy_(v)


# -- the loop ------------------------------------------------------------------------------------------


def _lr_lambda(optim: OptimConfig) -> Any:
    def fn(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / max(1, optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / max(1, optim.steps - optim.warmup_steps))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def _quantizer_losses(out: dict[str, Any]) -> dict[str, Tensor]:
    """The family's own losses minus its reconstruction terms (the trainer computes those itself)."""
    losses = out.get("losses") or {}
    return {k: v for k, v in losses.items() if not k.startswith("reconstruction") and torch.is_tensor(v)}


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        self.tok = build_model(cfg).to(self.device)
        self.modality = self.tok.spec.modality
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        train_files = resolve_media(cfg.data.train, self.modality)
        self.heldout_files = resolve_media(cfg.data.heldout, self.modality) if cfg.data.heldout else []
        overlap = {p.resolve() for p in train_files} & {p.resolve() for p in self.heldout_files}
        if overlap:
            raise ConfigError(f"held-out media are also in the training set: {sorted(map(str, overlap))}")
        self.train_files = train_files
        items = [load_item(p, self.tok, cfg.data) for p in train_files]
        multiple, rate = _multiple(self.tok, self.modality), self.tok.spec.sample_rate
        self.sampler = Sampler(items, self.modality, cfg.data, multiple, cfg.seed + 1, rate)
        self.recon_loss = ReconstructionLoss(self.modality, cfg.loss, self.tok.spec.sample_rate).to(self.device)
        o = cfg.optim
        self.opt = torch.optim.AdamW(self.tok.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(o))
        self.ema = Ema(self.tok, o.ema_decay)
        self.disc: nn.Module | None = None
        if cfg.loss.gan.weight > 0:
            from zoo.losses import make_discriminator

            self.disc = make_discriminator(self.modality, cfg.loss.gan.width).to(self.device)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.loss.gan.lr, betas=tuple(o.betas))
        self.step = 0
        self.seconds = 0.0

    # -- state -------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / "train_state.pt"

    def save_state(self) -> None:
        state = {
            "step": self.step,
            "seconds": self.seconds,
            "model": self.tok.state_dict(),
            "ema": self.ema.shadow,
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "data_rng": self.sampler.generator.get_state(),
        }
        if self.disc is not None:
            state["disc"] = self.disc.state_dict()
            state["opt_d"] = self.opt_d.state_dict()
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.state_path)

    def load_state(self) -> bool:
        if not self.state_path.is_file():
            return False
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.tok.load_state_dict(state["model"])
        self.ema.shadow = state["ema"]
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["torch_rng"])
        self.sampler.generator.set_state(state["data_rng"])
        if self.disc is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        return True

    # -- one step ----------------------------------------------------------------------------------
    def train_step(self, x: Tensor) -> dict[str, float]:
        cfg = self.cfg
        self.tok.train()
        out = self.tok(x)
        recon, target = _match(out["reconstruction"], x)
        parts = self.recon_loss(recon, target)
        parts.update({k: cfg.loss.quantizer * v for k, v in _quantizer_losses(out).items()})
        if cfg.loss.bit_balance and self.tok.spec.kind == "binary" and torch.is_tensor(out.get("latent")):
            latent = out["latent"]
            parts["bit_balance"] = cfg.loss.bit_balance * latent.reshape(-1, latent.shape[-1]).mean(0).pow(2).mean()
        gan_on = self.disc is not None and self.step >= cfg.loss.gan.start_step
        if gan_on:
            from zoo.losses import discriminator_loss, generator_losses

            assert self.disc is not None
            self.opt_d.zero_grad(set_to_none=True)
            d_loss = discriminator_loss(self.disc(target), self.disc(recon.detach()))
            d_loss.backward()
            self.opt_d.step()
            adv, fm = generator_losses(self.disc(target), self.disc(recon))
            parts["adversarial"] = cfg.loss.gan.weight * adv
            parts["feature_matching"] = cfg.loss.gan.feature_weight * fm
        loss = sum(parts.values())
        if not bool(torch.isfinite(loss)):
            raise ConfigError(f"loss became {float(loss)} at step {self.step}; lower optim.lr or raise grad_clip")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.tok.parameters(), cfg.optim.grad_clip or float("inf"))
        self.opt.step()
        self.sched.step()
        self.ema.update(self.tok, self.step, cfg.optim.ema_start)
        row = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}
        row["grad_norm"] = float(grad_norm)
        if gan_on:
            row["discriminator"] = float(d_loss.detach())
        row.update(_usage(out.get("ids"), tuple(self.tok.spec.codebook_sizes)))
        return row

    def fit(self) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        resumed = self.load_state()
        log = (self.out / "metrics.jsonl").open("a")
        if resumed:
            log.write(json.dumps({"event": "resume", "step": self.step}) + "\n")
        bar = tqdm(total=cfg.optim.steps, initial=self.step, desc=f"train {cfg.name}", dynamic_ncols=True)
        start = time.perf_counter() - self.seconds
        stop = min(cfg.optim.steps, self.step + cfg.stop_after) if cfg.stop_after is not None else cfg.optim.steps
        try:
            while self.step < stop:
                row = self.train_step(self.sampler.batch().to(self.device))
                self.step += 1
                self.seconds = time.perf_counter() - start
                if self.step % cfg.log_every == 0 or self.step == cfg.optim.steps:
                    lr = self.sched.get_last_lr()[0]
                    row = {"step": self.step, "lr": lr, "seconds": round(self.seconds, 2), **row}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{row['loss']:.4f}", usage=f"{row.get('usage', 0):.2f}")
                bar.update(1)
                if self.step % cfg.save_every == 0:
                    self.save_state()
                if cfg.max_minutes and self.seconds > 60 * cfg.max_minutes:
                    log.write(json.dumps({"event": "time_limit", "step": self.step}) + "\n")
                    break
        finally:
            bar.close()
            log.close()
        self.save_state()

    # -- evaluation and export ---------------------------------------------------------------------
    def ema_model(self) -> Any:
        self.tok.load_state_dict(self.ema.shadow)
        return self.tok.eval()

    def finish(self) -> Path:
        tok = self.ema_model()
        metrics = evaluate(tok, self.heldout_files, self.cfg.data) if self.heldout_files else {}
        metrics["train_steps"] = self.step
        metrics["train_minutes"] = round(self.seconds / 60, 2)
        tok.metrics = metrics
        tok.variant = self.cfg.name
        tok.source = {
            "trained_with": "zoo train",
            "train_config": OmegaConf.to_container(OmegaConf.structured(self.cfg), resolve=True),
            "train_files": [_display(p) for p in self.train_files],
            "heldout_files": [_display(p) for p in self.heldout_files],
        }
        card = dict(self.cfg.card)
        body = card.pop("body", "")
        body = "\n\n".join(filter(None, [_training_section(self), str(body).strip()]))
        path = tok.save_pretrained(self.out / "checkpoint", body=body, ref=self.cfg.name, **card)
        return Path(path)


def _display(path: Path) -> str:
    """How a card names a media file: `pkg:` for files inside installed packages, else repo-relative."""
    parts = path.resolve().parts
    if "site-packages" in parts:
        return "pkg:" + "/".join(parts[parts.index("site-packages") + 1 :])
    try:
        return str(path.resolve().relative_to(_repo_root()))
    except ValueError:
        return path.name


def _training_section(trainer: Trainer) -> str:
    cfg = trainer.cfg
    lines = [
        "## Training",
        "",
        f"Trained with `zoo train` for {trainer.step} steps ({trainer.seconds / 60:.1f} min on {cfg.device}, "
        f"batch {cfg.data.batch_size}, seed {cfg.seed}); the weights are the EMA (decay {cfg.optim.ema_decay}).",
        "",
        "Training media: " + ", ".join(f"`{_display(p)}`" for p in trainer.train_files) + ".",
        "",
        "Held-out media (never trained on; the metrics above are measured on them through `encode`/`decode`): "
        + (", ".join(f"`{_display(p)}`" for p in trainer.heldout_files) or "none") + ".",
    ]
    return "\n".join(lines)


@torch.no_grad()
def evaluate(tok: Any, files: list[Path], data: DataConfig) -> dict[str, Any]:
    """Held-out metrics through the public encode/decode path, per file and averaged."""
    from modalities import metrics as M

    per: dict[str, list[float]] = {}
    spec = tok.spec

    def add(key: str, value: float) -> None:
        per.setdefault(key, []).append(float(value))

    for path in files:
        x = load_item(path, tok, data, heldout=True).unsqueeze(0).to(tok.device)
        kwargs = {"generator": torch.Generator(device=tok.device).manual_seed(0)} if spec.stochastic_decode else {}
        y = tok.decode(tok.encode(x), **kwargs).float()
        y, x = _match(y, x)
        if spec.modality == "audio":
            rate = int(spec.sample_rate)
            add("si_snr_db", M.si_snr(y, x).item())
            add("mel_distance", M.mel_distance(y, x, rate).item())
            add("mel_distance_silence_baseline", M.mel_distance(torch.zeros_like(x), x, rate).item())
            for name, fn in (("stoi", M.stoi), ("pesq_wb", M.pesq)):
                try:
                    add(name, fn(y, x, rate).item())
                except Exception as exc:  # noqa: BLE001 - optional metric packages; say why it is missing
                    per.setdefault(f"{name}_unavailable", []).append(0.0)
                    print(f"{name} not measured: {exc}")
        else:
            add("psnr_db", M.psnr(y.clamp(-1, 1), x).mean().item())
            if spec.modality == "image":
                add("ssim", M.ssim(y.clamp(-1, 1), x).mean().item())
    out: dict[str, Any] = {f"heldout_{k}": sum(v) / len(v) for k, v in per.items() if not k.endswith("unavailable")}
    out["heldout_items"] = len(files)
    out["heldout_per_file"] = {
        _display(p): {k: round(v[i], 4) for k, v in per.items() if not k.endswith("unavailable")}
        for i, p in enumerate(files)
    }
    return out


def train(config: str | Path | dict[str, Any] | TrainConfig, overrides: list[str] | None = None) -> Path:
    """Run (or resume) the training a config describes; return the written checkpoint folder."""
    if isinstance(config, TrainConfig):
        config = OmegaConf.structured(config)
    cfg = load_train_config(config, overrides)
    trainer = Trainer(cfg)
    trainer.fit()
    return trainer.finish()


def train_from_cli(config_path: str, overrides: list[str]) -> Path:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise InputError(f"overrides must look like key=value (e.g. optim.steps=100); got {bad}")
    return train(config_path, overrides)

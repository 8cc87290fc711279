"""`zoo demo`: tokenize the bundled sample media and write reconstructions, plots and a report.

With no models named it uses the default checkpoints that ship inside the package (no network):
the image default for the sample photographs and, frame by frame, for the sample video; the speech
default for the sample speech. Named models (`--model NAME`, any registered pretrained variant or a
checkpoint folder) each get the sample media of their own modality.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from registry.errors import InputError

DEMO_IMAGES = ("chelsea.png", "coffee.jpg", "astronaut.webp")
DEMO_VIDEO = "bbb_clip.mp4"
DEMO_AUDIO = "arctic_a0009.wav"
VIDEO_FRAMES = 16


@dataclass
class Section:
    """One model on one sample: what the report shows."""

    title: str
    model: str
    spec_rows: list[tuple[str, str]]
    metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # label -> path relative to the report
    plots: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _decode(tok: Any, tokens: Any) -> Tensor:
    kwargs = {"generator": torch.Generator(device=tok.device).manual_seed(0)} if tok.spec.stochastic_decode else {}
    return tok.decode(tokens, **kwargs).float().cpu()


def _ids_summary(tokens: Any) -> str:
    ids = tokens.ids
    return "continuous latent" if ids is None else f"ids {tuple(ids.shape)}"


def _codebook(tok: Any) -> int | None:
    sizes = tuple(tok.spec.codebook_sizes)
    return int(sizes[0]) if sizes else None


PLOTTED_CODES = 1 << 20  # a histogram of more bins than this says nothing a reader can see


def _images(tok: Any, out: Path, label: str) -> Section:
    import modalities
    from modalities import metrics as M

    section = Section(f"Images: {label}", tok.name, tok.spec.rows())
    originals, recons, all_ids, psnrs, ssims = [], [], [], [], []
    for name in DEMO_IMAGES:
        x = modalities.image.load(modalities.samples.path(name))
        tokens = tok.encode(x.to(tok.device))
        y = _decode(tok, tokens)[..., : x.shape[-2], : x.shape[-1]].clamp(-1, 1)
        stem = Path(name).stem
        path = modalities.image.save(y[0], out / f"{label}_{stem}_reconstruction.png")
        section.files[f"{name} reconstruction ({_ids_summary(tokens)})"] = Path(path).name
        psnrs.append(float(M.psnr(y, x).mean()))
        ssims.append(float(M.ssim(y, x).mean()))
        section.metrics[f"{stem} PSNR (dB)"] = psnrs[-1]
        side = min(x.shape[-2:])
        originals.append(_center_square(x[0], side))
        recons.append(_center_square(y[0], side))
        if tokens.ids is not None:
            all_ids.append(tokens.ids)
    _provenance(tok, DEMO_IMAGES, section)
    section.metrics["mean PSNR (dB)"] = sum(psnrs) / len(psnrs)
    section.metrics["mean SSIM"] = sum(ssims) / len(ssims)
    size = min(t.shape[-1] for t in originals)
    a = torch.stack([_resize(t, size) for t in originals])
    b = torch.stack([_resize(t, size) for t in recons])
    section.plots["image grid (centre squares)"] = modalities.plots.image_grid(
        a, b, out / f"{label}_image_grid.png", titles=[Path(n).stem for n in DEMO_IMAGES]
    ).name
    _usage_plot(tok, all_ids, out / f"{label}_image_usage.png", section)
    return section


def _provenance(tok: Any, names: tuple[str, ...], section: Section) -> None:
    """Say whether the model trained on these samples (the defaults never did: they are held out)."""
    source = getattr(tok, "source", {}) or {}
    heldout = {Path(p).name for p in source.get("heldout_files", [])}
    trained = {Path(p).name for p in source.get("train_files", [])}
    if names and all(n in heldout for n in names):
        section.notes.append(f"{', '.join(names)}: held out from {tok.name}'s training (never trained on)")
    elif any(n in trained for n in names):
        section.notes.append(f"{tok.name} was trained on some of these samples: the numbers are not held-out numbers")


def _center_square(x: Tensor, side: int) -> Tensor:
    h, w = x.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top : top + side, left : left + side]


def _resize(x: Tensor, side: int) -> Tensor:
    if x.shape[-1] == side:
        return x
    return torch.nn.functional.interpolate(x[None], size=(side, side), mode="area")[0]


def _usage_plot(tok: Any, ids: list[Tensor], path: Path, section: Section) -> None:
    import modalities
    from modalities.metrics import codebook_usage

    size = _codebook(tok)
    if not ids or size is None:
        section.notes.append("no codebook histogram (continuous tokens)")
        return
    books = len(tuple(tok.spec.codebook_sizes))
    flat = torch.cat([(i[..., 0] if books > 1 and i.shape[-1] == books else i).reshape(-1) for i in ids]).cpu()
    usage = codebook_usage(flat, size, histogram=False)
    section.metrics["codes used"] = float(usage.used)
    section.metrics["codebook perplexity"] = float(usage.perplexity)
    if size > PLOTTED_CODES:
        section.notes.append(f"no codebook histogram: {size:,} codes are too many bins to plot")
        return
    section.plots["codebook usage (first codebook)"] = modalities.plots.codebook_histogram(flat, size, path).name


def _video_frames(tok: Any, out: Path, label: str) -> Section:
    """An image tokenizer on each frame of the sample video (video tokenizers get the clip whole)."""
    import modalities
    from modalities import metrics as M

    section = Section(f"Video: {label}", tok.name, tok.spec.rows())
    video = modalities.video.load(modalities.samples.path(DEMO_VIDEO), max_frames=VIDEO_FRAMES)
    fps = modalities.video.info(modalities.samples.path(DEMO_VIDEO)).fps
    if tok.spec.modality == "video":
        tokens = tok.encode(video.to(tok.device))
        recon = _decode(tok, tokens)[..., : video.shape[2], : video.shape[3], : video.shape[4]].clamp(-1, 1)
        ids = [tokens.ids] if tokens.ids is not None else []
    else:
        frames = video[0].movedim(1, 0)  # (T, C, H, W)
        tokens = tok.encode(frames.to(tok.device))
        recon = _decode(tok, tokens)[..., : frames.shape[-2], : frames.shape[-1]].clamp(-1, 1)
        recon = recon.movedim(0, 1)[None]
        ids = [tokens.ids] if tokens.ids is not None else []
        section.notes.append(f"{tok.name} is an image tokenizer: each of the {VIDEO_FRAMES} frames is tokenized alone")
    section.metrics["PSNR (dB)"] = float(M.psnr(recon, video).mean())
    path = modalities.video.save(recon[0], out / f"{label}_video_reconstruction.mp4", fps, crf=12)
    section.files[f"{DEMO_VIDEO} reconstruction, first {video.shape[2]} frames"] = Path(path).name
    section.plots["video frames (top: original, bottom: reconstruction)"] = modalities.plots.video_strip(
        video[0], out / f"{label}_video_strip.png", reconstruction=recon[0]
    ).name
    _usage_plot(tok, ids, out / f"{label}_video_usage.png", section)
    return section


def _audio(tok: Any, out: Path, label: str) -> Section:
    import modalities
    from modalities import metrics as M

    spec = tok.spec
    rate = int(spec.sample_rate)
    section = Section(f"Speech: {label}", tok.name, spec.rows())
    x = modalities.audio.load(modalities.samples.path(DEMO_AUDIO), sample_rate=rate, channels="mono")
    if spec.channels and spec.channels > 1:
        x = x.expand(-1, spec.channels, -1)
    tokens = tok.encode(x.to(tok.device))
    y = _decode(tok, tokens)[..., : x.shape[-1]]
    x = x[..., : y.shape[-1]]
    _provenance(tok, (DEMO_AUDIO,), section)
    section.metrics["SI-SNR (dB)"] = float(M.si_snr(y, x).mean())
    section.metrics["mel distance"] = float(M.mel_distance(y, x, rate).mean())
    section.metrics["mel distance of silence (baseline)"] = float(M.mel_distance(torch.zeros_like(x), x, rate).mean())
    for name, fn in (("STOI", M.stoi), ("PESQ-WB", M.pesq)):
        try:
            section.metrics[name] = float(fn(y, x, rate).mean())
        except Exception as exc:  # noqa: BLE001 - optional metric packages: report why it is missing
            section.notes.append(f"{name} not measured: {exc}")
    path = modalities.audio.save(y[0], out / f"{label}_speech_reconstruction.wav", rate)
    section.files[f"{DEMO_AUDIO} reconstruction ({_ids_summary(tokens)})"] = Path(path).name
    section.plots["log-mel spectrograms"] = modalities.plots.spectrogram_comparison(
        x[0], y[0], rate, out / f"{label}_spectrograms.png"
    ).name
    ids = [tokens.ids] if tokens.ids is not None else []
    _usage_plot(tok, ids, out / f"{label}_speech_usage.png", section)
    return section


def _label(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(name).name)


def _sections_for(tok: Any, out: Path, label: str) -> list[Section]:
    modality = tok.spec.modality
    if modality == "image":
        return [_images(tok, out, label), _video_frames(tok, out, label)]
    if modality == "video":
        return [_video_frames(tok, out, label)]
    return [_audio(tok, out, label)]


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _write_report(out: Path, sections: list[Section], seconds: float) -> Path:
    md = ["# tokenzoo demo", "", f"Bundled sample media tokenized and reconstructed in {seconds:.1f} s.", ""]
    body = ["<h1>tokenzoo demo</h1>", f"<p>Bundled sample media tokenized and reconstructed in {seconds:.1f} s.</p>"]
    for s in sections:
        md += [f"## {s.title}", "", f"Model: `{s.model}`", "", "| token spec | |", "|---|---|"]
        md += [f"| {k} | {v} |" for k, v in s.spec_rows] + ["", "| metric | value |", "|---|---|"]
        md += [f"| {k} | {_fmt(v)} |" for k, v in s.metrics.items()] + [""]
        md += [f"- {label}: [{name}]({name})" for label, name in s.files.items()]
        md += [f"- {n}" for n in s.notes] + [""]
        md += [f"![{label}]({name})" for label, name in s.plots.items()] + [""]
        body += [f"<h2>{html.escape(s.title)}</h2>", f"<p>Model: <code>{html.escape(s.model)}</code></p>",
                 "<table><tr><th>token spec</th><th></th></tr>"]
        body += [f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in s.spec_rows]
        body += ["</table>", "<table><tr><th>metric</th><th>value</th></tr>"]
        body += [f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in s.metrics.items()]
        body += ["</table>", "<ul>"]
        body += [f'<li>{html.escape(lbl)}: <a href="{html.escape(n)}">{html.escape(n)}</a></li>'
                 for lbl, n in s.files.items()]
        body += [f"<li>{html.escape(n)}</li>" for n in s.notes] + ["</ul>"]
        body += [f'<figure><img src="{html.escape(n)}" alt="{html.escape(lbl)}"><figcaption>{html.escape(lbl)}'
                 "</figcaption></figure>" for lbl, n in s.plots.items()]
    (out / "report.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>tokenzoo demo</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}img{max-width:100%}"
        "td,th{padding:0 1em;text-align:left}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    (out / "metrics.json").write_text(
        json.dumps({s.title: {"model": s.model, **s.metrics} for s in sections}, indent=2) + "\n"
    )
    report = out / "report.md"
    report.write_text("\n".join(md) + "\n")
    return report


def run_demo(out: str | Path = "demo_out", models: list[str] | None = None, device: str | None = None) -> Path:
    """Tokenize the bundled samples with the default (or named) tokenizers; return the report's path."""
    import zoo
    from zoo.checkpoints import DEFAULTS

    names = list(models) if models else [DEFAULTS["image"], DEFAULTS["audio"]]
    if not names:
        raise InputError("no tokenizer to demo: name one with --model NAME, or omit --model for the defaults")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sections: list[Section] = []
    with torch.inference_mode():
        for name in names:
            tok = zoo.from_pretrained(name, device=device)
            if not tok.spec.can_decode:
                raise InputError(
                    f"{name} is encoder-only; the demo reconstructs media, so pick a tokenizer that decodes"
                )
            sections += _sections_for(tok, out, _label(name))
    return _write_report(out.resolve(), sections, time.perf_counter() - start)

"""Model cards (README.md with Hub metadata) for tokenzoo checkpoints."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData

_PIPELINE = {"image": "image-feature-extraction", "video": "video-classification", "audio": "audio-to-audio"}


def model_card(tok: Any, config: dict[str, Any], **extra: Any) -> ModelCard:
    spec = tok.spec
    source = dict(config.get("source") or {})
    name = tok.name
    tags = ["tokenzoo", "tokenizer", spec.modality, tok.family, f"{spec.kind}-tokens"]
    data = ModelCardData(
        library_name="tokenzoo",
        license=extra.get("license") or source.get("license") or "other",
        tags=tags,
        pipeline_tag=_PIPELINE.get(spec.modality),
        base_model=source.get("repo") if source.get("repo") and "/" in str(source.get("repo")) else None,
    )
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {name}",
        "",
        extra.get("description")
        or f"A {spec.modality} tokenizer of the `{tok.family}` family, packaged with tokenzoo.",
        "",
        "## Token spec",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in spec.rows()],
        "",
    ]
    metrics = dict(config.get("metrics") or {})
    metrics.update(extra.get("metrics") or {})
    if metrics:
        lines += ["## Measured metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    if extra.get("body"):
        lines += [str(extra["body"]), ""]
    lines += [
        "## Usage",
        "",
        "```python",
        "import zoo",
        f'tok = zoo.from_pretrained("{extra.get("ref") or name}")',
        f"tokens = tok.encode(x)  # x: canonical {spec.modality} tensor (see the token spec)",
        *(
            ["y = tok.decode(tokens)"]
            if spec.can_decode
            else ["# encoder-only: tok.embed(tokens.ids) gives code vectors"]
        ),
        "```",
        "",
    ]
    if source:
        lines += ["## Upstream", ""]
        for key in ("paper", "code", "repo", "filename", "revision", "sha256", "license"):
            if source.get(key):
                lines.append(f"- {key}: {source[key]}")
        lines.append("")
        lines.append("Weights are the upstream authors'; credit and citation belong to them.")
        if source.get("citation"):
            lines += ["", "```bibtex", str(source["citation"]).strip(), "```"]
        lines.append("")
    return ModelCard("\n".join(lines))

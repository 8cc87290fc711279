"""The `zoo` command: a thin shell over the same calls as the Python API.

User mistakes (bad paths, unknown names, bad input) print one plain line and exit 2; bugs still
show a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from registry.errors import InputError, ZooError


def _cmd_list(args: argparse.Namespace) -> int:
    import zoo
    from registry import variant_info

    names = zoo.list_tokenizers(args.pattern, modality=args.modality, pretrained=args.pretrained)
    if args.json:
        print(json.dumps([_variant_row(n) for n in names], indent=2))
        return 0
    if not names:
        print("no registered tokenizer matches")
        return 0
    rows = [("name", "family", "modality", "weights", "tokens")]
    for n in names:
        info = variant_info(n)
        rows.append((n, info.family, info.modality, "pretrained" if info.pretrained else "-", _short_spec(n)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def _spec_of(name: str) -> Any:
    import zoo

    return zoo.info(name)["spec"]


def _short_spec(name: str) -> str:
    spec = _spec_of(name)
    parts = [spec.kind]
    if spec.codebook_sizes:
        sizes = spec.codebook_sizes
        parts.append(f"{len(sizes)}x{sizes[0]}" if len(sizes) > 1 else f"{sizes[0]} codes")
    if spec.bits_per_token:
        parts.append(f"{spec.bits_per_token} bits")
    if spec.token_rate:
        parts.append(f"{spec.token_rate:g}/s")
    if spec.tokens_per_item:
        parts.append(f"{spec.tokens_per_item}/item")
    if not spec.can_decode:
        parts.append("encoder-only")
    return ", ".join(parts)


def _variant_row(name: str) -> dict[str, Any]:
    import zoo

    info = zoo.info(name)
    info["spec"] = info["spec"].as_dict()
    return info


def _cmd_info(args: argparse.Namespace) -> int:
    import zoo

    info = zoo.info(args.name)
    if args.json:
        info["spec"] = info["spec"].as_dict()
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['name']}  ({info['family']}, {info['modality']})")
    if info["description"]:
        print(info["description"])
    print(f"parameters: {info['parameters']:,}")
    for key, value in info["spec"].rows():
        print(f"  {key:<18} {value}")
    up = info["upstream"]
    if up:
        print("upstream:")
        for key in ("repo", "filename", "revision", "sha256", "license", "paper", "code"):
            if up.get(key):
                print(f"  {key:<18} {up[key]}")
    return 0


def _load(ref: str, device: str | None) -> Any:
    import zoo

    return zoo.from_pretrained(ref, device=device)


def _read_media(path: str, tok: Any) -> Any:
    """Load a file by what it contains, shaped for the tokenizer's modality (an image is a 1-frame video)."""
    import modalities

    spec = tok.spec
    kind = modalities.detect(path)
    if spec.modality == "audio":
        if kind == "image":
            raise InputError(f"{path} is an image; {tok.name} tokenizes audio")
        mono = "mono" if spec.channels == 1 else None
        return modalities.audio.load(path, sample_rate=spec.sample_rate, channels=mono)
    if kind == "audio":
        raise InputError(f"{path} is audio; {tok.name} tokenizes {spec.modality}")
    if spec.modality == "image":
        if kind == "video":
            raise InputError(f"{path} is a video; {tok.name} tokenizes single images (extract a frame first)")
        return modalities.image.load(path)
    return modalities.video.load(path) if kind == "video" else modalities.image.load(path).unsqueeze(2)


def _write_media(y: Any, dst: Path, tok: Any) -> Path:
    """Write one decoded item; the format follows what came out (a 1-frame video is written as an image)."""
    import modalities

    if tok.spec.modality == "audio":
        return modalities.audio.save(y, dst.with_suffix(dst.suffix or ".wav"), tok.spec.sample_rate)
    if y.dim() == 4 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() == 3:
        return modalities.image.save(y, dst if dst.suffix in (".png", ".jpg", ".webp", ".bmp", ".tif") else
                                     dst.with_suffix(".png"))
    return modalities.video.save(y, dst if dst.suffix in (".mp4", ".webm", ".mkv", ".gif") else dst.with_suffix(".mp4"))


def _cmd_encode(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    tok = _load(args.model, args.device)
    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    if len(inputs) > 1 or out.is_dir() or not out.suffix:
        out.mkdir(parents=True, exist_ok=True)
        targets = [out / f"{p.stem}.tokens.safetensors" for p in inputs]
    else:
        targets = [out]
    for src, dst in tqdm(list(zip(inputs, targets, strict=True)), desc="encode", disable=len(inputs) < 2):
        tokens = tok.encode(_read_media(str(src), tok))
        tokens.meta["source"] = str(src)
        tokens.save(dst)
        print(f"{src} -> {dst}  {tokens}")
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from zoo.tokens import Tokens

    tok = _load(args.model, args.device)
    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    if len(inputs) > 1 or not out.suffix:
        out.mkdir(parents=True, exist_ok=True)
        targets = [out / p.name.split(".")[0] for p in inputs]
    else:
        targets = [out]
    for src, dst in tqdm(list(zip(inputs, targets, strict=True)), desc="decode", disable=len(inputs) < 2):
        y = tok.decode(Tokens.load(src))
        written = _write_media(y[0], dst, tok)
        print(f"{src} -> {written}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from registry import convert_files

    upstream_config: Any = None
    if args.upstream_config:
        cfg_path = Path(args.upstream_config)
        if cfg_path.suffix == ".json":
            upstream_config = json.loads(cfg_path.read_text())
        else:
            from omegaconf import OmegaConf

            upstream_config = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    container = args.container.split(".") if args.container else None
    tok = convert_files(args.family, args.checkpoint, upstream_config, container=container)
    tok.source = {"converted_from": [str(p) for p in args.checkpoint]}
    tok.save_pretrained(args.out)
    print(f"converted {args.family} -> {args.out}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    tok = _load(args.model, None)
    oid = tok.push_to_hub(args.repo_id, private=args.private, revision=args.revision)
    print(f"pushed {tok.name} to {args.repo_id} ({oid})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from zoo.demo import run_demo

    report = run_demo(args.out, models=args.model or None, device=args.device)
    print(f"report: {report}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import export

    tok = _load(args.model, None)
    result = export.to_onnx(tok, args.out, verify=args.verify, opset=args.opset)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from zoo.train import train_from_cli

    out = train_from_cli(args.config, args.overrides)
    print(f"checkpoint: {out}")
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from zoo.dataset import tokenize_dataset

    manifest = tokenize_dataset(
        args.input,
        model=args.model,
        out=args.out,
        engine=args.engine,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        shard_size=args.shard_size,
        layout=args.layout,
        image_size=args.image_size,
    )
    print(json.dumps({k: manifest[k] for k in ("items", "failures", "shards") if k in manifest}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="tokenzoo: image, video and audio tokenizers")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list registered tokenizers")
    s.add_argument("pattern", nargs="?", help="shell wildcard, e.g. 'wav*'")
    s.add_argument("--modality", choices=["image", "video", "audio"])
    s.add_argument("--pretrained", action="store_true", default=None, help="only those with weights")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_list)

    s = sub.add_parser("info", help="token spec and source of one tokenizer")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_info)

    for name, fn, what in (("encode", _cmd_encode, "media files"), ("decode", _cmd_decode, "tokens files")):
        s = sub.add_parser(name, help=f"{name} {what}")
        s.add_argument("model", help="registered name, checkpoint folder or hf-hub:org/repo")
        s.add_argument("inputs", nargs="+")
        s.add_argument("--out", "-o", required=True)
        s.add_argument("--device")
        s.set_defaults(func=fn)

    s = sub.add_parser("convert", help="convert an upstream checkpoint to a tokenzoo checkpoint")
    s.add_argument("family")
    s.add_argument("checkpoint", nargs="+", help="upstream file(s): .ckpt/.pt (weights_only), .safetensors, .onnx")
    s.add_argument("--upstream-config", help="upstream config (.yaml or .json)")
    s.add_argument("--container", help="dotted path to the state dict inside the file, e.g. state_dict")
    s.add_argument("--out", "-o", required=True)
    s.set_defaults(func=_cmd_convert)

    s = sub.add_parser("push", help="push a tokenizer to the Hugging Face Hub")
    s.add_argument("model")
    s.add_argument("repo_id")
    s.add_argument("--private", action="store_true")
    s.add_argument("--revision")
    s.set_defaults(func=_cmd_push)

    s = sub.add_parser("demo", help="tokenize the bundled sample media and write a report")
    s.add_argument("--out", "-o", default="demo_out")
    s.add_argument("--model", action="append", help="use this tokenizer (repeatable) instead of the defaults")
    s.add_argument("--device")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("export", help="export a tokenizer to ONNX")
    s.add_argument("model")
    s.add_argument("--out", "-o", required=True)
    s.add_argument("--verify", action="store_true", help="compare onnxruntime with PyTorch")
    s.add_argument("--opset", type=int, default=18)
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser("train", help="train a tokenizer from an OmegaConf YAML")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", help="key=value overrides")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("tokenize", help="tokenize a dataset into resumable Parquet shards")
    s.add_argument("input", help="folder, file list (.txt) or glob")
    s.add_argument("--model", required=True)
    s.add_argument("--out", "-o", required=True)
    s.add_argument("--engine", choices=["local", "ray"], default="local")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--workers", type=int, default=2, help="reader processes (local) or tokenizer actors (ray)")
    s.add_argument("--device")
    s.add_argument("--shard-size", type=int, default=1024, help="input items per Parquet shard")
    s.add_argument("--layout", choices=["ids", "sequence"], default="ids", help="natural ids or flattened LM ids")
    s.add_argument("--image-size", type=int, help="resize the short side and centre-crop images to this size")
    s.set_defaults(func=_cmd_tokenize)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZooError as exc:
        print(f"zoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"zoo {args.command}: error: {exc.filename or exc}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

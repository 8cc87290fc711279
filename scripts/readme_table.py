"""Print (or, with --write, refresh) the README's table of registered tokenizers from the registry.

tests/test_readme.py fails when README.md and the registry disagree, so the table stays true.
"""

from __future__ import annotations

import sys
from pathlib import Path

BEGIN = "<!-- tokenizers:begin -->"
END = "<!-- tokenizers:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def table() -> str:
    import registry
    import zoo

    rows = [
        "| name | family | modality | tokens | weights | upstream parity | ONNX | decodes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in zoo.list_tokenizers():
        info = zoo.info(name)
        spec = info["spec"]
        cls = registry.family_class(info["family"])
        if spec.kind == "continuous":
            tokens = f"continuous, {spec.latent_dim} ch"
        elif spec.bits_per_token:
            tokens = f"{spec.bits_per_token} bits"
        else:
            sizes = spec.codebook_sizes
            tokens = f"{len(sizes)} x {sizes[0]}" if len(sizes) > 1 else f"{sizes[0]} codes"
        if spec.token_rate:
            tokens += f", {spec.token_rate:g}/s"
        if spec.tokens_per_item:
            tokens += f", {spec.tokens_per_item}/item"
        cases = getattr(cls, "parity_cases", ())
        weights = "upstream (converted)" if info["upstream"] else ("bundled" if info["pretrained"] else "random init")
        own = info["upstream"] or not (info["pretrained"] or name.endswith("-tiny"))
        parity = ", ".join(cases) if cases and own else "-"
        parts = {k: v for k, v in spec.export.items() if spec.can_decode or k != "decoder"}
        onnx = "yes" if all(v is None for v in parts.values()) else "partial"
        if not spec.can_decode and onnx == "yes":
            onnx = "encoder"
        decodes = "yes" if spec.can_decode else "no"
        if spec.decode_needs:
            decodes += f" (needs {', '.join(spec.decode_needs)})"
        rows.append(f"| `{name}` | {info['family']} | {info['modality']} | {tokens} | {weights} | {parity} | "
                    f"{onnx} | {decodes} |")
    return "\n".join(rows)


def current() -> str:
    text = README.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main() -> int:
    fresh = table()
    if "--write" in sys.argv:
        text = README.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        README.write_text(f"{head}{BEGIN}\n{fresh}\n{END}{tail}")
    else:
        print(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())

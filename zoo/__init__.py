"""tokenzoo: image, video and audio tokenizers behind one API.

    import zoo
    zoo.list_tokenizers()
    tok = zoo.from_pretrained("wavtokenizer-large-speech-75")
    tokens = tok.encode(x)
    y = tok.decode(tokens)

Importing `zoo` imports every family module, which registers its variants and converter.
"""

from __future__ import annotations

import importlib

from registry import (
    BackendError,
    CheckpointError,
    ConfigError,
    ExportError,
    InputError,
    MediaError,
    UnsupportedError,
    ZooError,
    convert,
    create_tokenizer,
    from_pretrained,
    list_tokenizers,
    register_converter,
    register_tokenizer,
)
from zoo.spec import TokenSpec
from zoo.tokenizer import Tokenizer, __version__
from zoo.tokens import Tokens

# One module per family; each registers its variants and converter at its bottom.
FAMILY_MODULES: tuple[str, ...] = ("s3tokenizer", "tokenflow", "uniwetok", "wavtokenizer")

for _module in FAMILY_MODULES:
    importlib.import_module(f"zoo.{_module}")


def info(name: str) -> dict:
    """The registered facts of a variant: family, modality, token spec, upstream source."""
    import torch

    from registry import variant_info

    meta = variant_info(name)
    with torch.device("meta"):  # the spec needs the architecture, not weights: build without memory
        tok = create_tokenizer(name)
    return {
        "name": name,
        "family": meta.family,
        "modality": meta.modality,
        "description": meta.description,
        "pretrained": meta.pretrained,
        "upstream": meta.upstream,
        "spec": tok.spec,
        "parameters": sum(p.numel() for p in tok.parameters()),
    }


__all__ = [
    "BackendError",
    "CheckpointError",
    "ConfigError",
    "ExportError",
    "InputError",
    "MediaError",
    "TokenSpec",
    "Tokenizer",
    "Tokens",
    "UnsupportedError",
    "ZooError",
    "__version__",
    "convert",
    "create_tokenizer",
    "from_pretrained",
    "info",
    "list_tokenizers",
    "register_converter",
    "register_tokenizer",
]

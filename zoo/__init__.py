"""tokenzoo: image, video and audio tokenizers behind one API.

    import zoo
    zoo.list_tokenizers()
    tok = zoo.from_pretrained("wavtokenizer-large-speech-75")
    tokens = tok.encode(x)
    y = tok.decode(tokens)

Importing `zoo` imports every family module, which registers its variants and converter.
"""

from __future__ import annotations

import functools
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
FAMILY_MODULES: tuple[str, ...] = (
    "mosstokenizer", "omnitokenizer", "s3tokenizer", "tadicodec", "tokenflow", "uniflow", "uniwetok", "wavtokenizer",
    "xytokenizer",
)

for _module in FAMILY_MODULES:
    importlib.import_module(f"zoo.{_module}")
importlib.import_module("zoo.checkpoints")  # registers the default checkpoints shipped in the package


@functools.cache
def _spec_and_size(name: str) -> tuple[TokenSpec, int]:
    import torch

    with torch.device("meta"):  # the spec needs the architecture, not weights: build without memory
        tok = create_tokenizer(name)
    return tok.spec, sum(p.numel() for p in tok.parameters())


def info(name: str) -> dict:
    """The registered facts of a variant: family, modality, token spec, upstream source."""
    from registry import variant_info

    meta = variant_info(name)
    spec, size = _spec_and_size(name)
    return {
        "name": name,
        "family": meta.family,
        "modality": meta.modality,
        "description": meta.description,
        "pretrained": meta.pretrained,
        "upstream": meta.upstream,
        "spec": spec,
        "parameters": size,
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

"""Names -> builders and variant configs, Hub I/O, and the safe reading and conversion of upstream files."""

from registry.checkpoint import dig, load_state_strict, read_checkpoint, sha256_of
from registry.errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    ExportError,
    InputError,
    MediaError,
    UnsupportedError,
    ZooError,
)
from registry.hub import load_local, push_to_hub, save_pretrained
from registry.pretrained import cache_root, convert_files, download_upstream_state, from_pretrained
from registry.registry import (
    build,
    convert,
    converters,
    create_tokenizer,
    families,
    family_class,
    list_tokenizers,
    register_converter,
    register_tokenizer,
    variant_family,
    variant_info,
)

__all__ = [
    "BackendError",
    "CheckpointError",
    "ConfigError",
    "ExportError",
    "InputError",
    "MediaError",
    "UnsupportedError",
    "ZooError",
    "build",
    "cache_root",
    "convert",
    "convert_files",
    "converters",
    "create_tokenizer",
    "dig",
    "download_upstream_state",
    "families",
    "family_class",
    "from_pretrained",
    "list_tokenizers",
    "load_local",
    "load_state_strict",
    "push_to_hub",
    "read_checkpoint",
    "register_converter",
    "register_tokenizer",
    "save_pretrained",
    "sha256_of",
    "variant_family",
    "variant_info",
]

"""The default checkpoints that ship inside the package, so the main job works offline.

Each subfolder is a tokenzoo checkpoint (config.json, model.safetensors, README.md) written by
`zoo train` from a config in configs/train/; its variant YAML (configs/<name>.yaml) points here with
`checkpoint: {path: zoo/checkpoints/<name>}`. Importing this module registers those variants.
"""

from __future__ import annotations

from pathlib import Path

from registry.config import load_variant_config
from registry.registry import family_class, register_tokenizer

CHECKPOINT_DIR = Path(__file__).resolve().parent

# The defaults `zoo demo` uses, per modality (video is tokenized frame by frame with the image default).
DEFAULTS: dict[str, str] = {"image": "tokenzoo-image-f8", "audio": "tokenzoo-speech-16k"}


def _register() -> None:
    for name in DEFAULTS.values():
        register_tokenizer(family_class(str(load_variant_config(name).family)), variants=(name,))


_register()

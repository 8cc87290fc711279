"""tokenzoo's exception classes for the torch-free runtime.

`registry/errors.py` imports nothing, but importing it as `registry.errors` runs `registry/__init__.py`,
which imports torch. So when `registry` is not loaded yet, the leaf file is loaded by path under its
canonical module name: the classes are the very ones `zoo` raises, whether or not torch is installed
(a later `import zoo` finds `registry.errors` already in `sys.modules` and reuses it).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_NAME = "registry.errors"


def _errors_module() -> ModuleType:
    loaded = sys.modules.get(_NAME)
    if loaded is not None:
        return loaded
    path = Path(__file__).resolve().parent.parent / "registry" / "errors.py"
    spec = importlib.util.spec_from_file_location(_NAME, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken install
        raise ImportError(f"tokenzoo's error classes are missing: expected {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


_errors = _errors_module()
ZooError = _errors.ZooError
InputError = _errors.InputError
ConfigError = _errors.ConfigError
ExportError = _errors.ExportError
UnsupportedError = _errors.UnsupportedError
BackendError = _errors.BackendError
CheckpointError = _errors.CheckpointError
MediaError = _errors.MediaError

__all__ = [
    "BackendError",
    "CheckpointError",
    "ConfigError",
    "ExportError",
    "InputError",
    "MediaError",
    "UnsupportedError",
    "ZooError",
]

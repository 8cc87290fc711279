"""The one exception hierarchy of tokenzoo.

It lives in `registry` (a leaf module importing nothing) so that `modalities`, `registry`, `zoo` and
`export` can all raise the same classes without importing each other. Every message should say what
was expected, what was given, and what to do; `zoo.ZooError` is this `ZooError`.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error tokenzoo raises on purpose."""


class InputError(ZooError, ValueError):
    """Bad input data: wrong shape, dtype, range, NaN/Inf, out-of-range ids."""


class MediaError(InputError):
    """A media file that cannot be read or written (corrupt, empty, not media, too large)."""


class ConfigError(ZooError, ValueError):
    """A bad configuration: unknown key, wrong type, unknown variant or family."""


class CheckpointError(ZooError):
    """A checkpoint that cannot be loaded safely: missing/unexpected keys, shape mismatch, pickle."""


class BackendError(ZooError, RuntimeError):
    """A requested compute backend that is not available here (e.g. xformers without CUDA)."""


class ExportError(ZooError, RuntimeError):
    """An ONNX export that failed or disagrees with PyTorch."""


class UnsupportedError(ZooError, NotImplementedError):
    """An operation the tokenizer cannot do (e.g. decode with an encoder-only tokenizer)."""


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

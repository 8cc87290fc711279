"""Which attention backend runs: the call's argument, else a context, else a process default, else env.

Precedence, first set wins: `attention(..., backend=...)`, the innermost `with attention_backend(...)`,
`set_attention_backend(...)`, the `ZOO_ATTENTION` environment variable (read at each call), `"auto"`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from registry.errors import BackendError

BACKENDS: tuple[str, ...] = ("math", "sdpa", "xformers", "auto")
ENV_VAR = "ZOO_ATTENTION"

_process_default: str | None = None
_context_choice: ContextVar[str | None] = ContextVar("zoo_attention_backend", default=None)


def check_backend_name(name: object, source: str = "backend") -> str:
    """The name, lower-cased, if it is a known backend; else a `BackendError` naming the choices."""
    if isinstance(name, str) and name.strip().lower() in BACKENDS:
        return name.strip().lower()
    raise BackendError(
        f"unknown attention backend {name!r} (from {source}); expected one of {', '.join(BACKENDS)}. "
        "`auto` picks xformers on CUDA when installed and the mask suits it, else PyTorch SDPA."
    )


def set_attention_backend(name: str | None) -> None:
    """Set the process-wide default backend; `None` returns to `ZOO_ATTENTION` / `auto`."""
    global _process_default
    _process_default = None if name is None else check_backend_name(name, "set_attention_backend")


@contextmanager
def attention_backend(name: str) -> Iterator[str]:
    """Use `name` for every `attention()` call inside the block that does not name its own backend."""
    token = _context_choice.set(check_backend_name(name, "attention_backend"))
    try:
        yield _context_choice.get() or name
    finally:
        _context_choice.reset(token)


def requested_backend(explicit: str | None = None) -> str:
    """The backend name in force for a call that passed `explicit` (possibly `auto`)."""
    if explicit is not None:
        return check_backend_name(explicit, "the backend argument")
    chosen = _context_choice.get()
    if chosen is not None:
        return chosen
    if _process_default is not None:
        return _process_default
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return check_backend_name(from_env, f"the {ENV_VAR} environment variable")
    return "auto"

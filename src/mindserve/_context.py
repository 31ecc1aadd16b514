"""The servable version whose pipeline is running in this thread (for ``Model.call``)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("mindserve_current_servable", default=None)


def current_servable() -> Any:
    """The running ``LoadedServable`` whose stage is executing here, or ``None``."""
    return _current.get()


@contextlib.contextmanager
def running(loaded: Any) -> Iterator[None]:
    """Mark ``loaded`` as the servable version executing in this context."""
    token = _current.set(loaded)
    try:
        yield
    finally:
        _current.reset(token)

"""The step running in this thread: which servable version, for which call (for ``Model.call``).

A stage that calls ``model.call(...)`` runs that model on the version serving the call,
under the call's own :class:`~mindserve._waiting.Request`, so the caller's timeout and
cancellation reach the model call too.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from mindserve._loaded import LoadedServable
    from mindserve._waiting import Request


class StepContext(NamedTuple):
    """The running version whose stage executes here, and the call it serves."""

    loaded: LoadedServable
    request: Request


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("mindserve_step", default=None)


def current_step() -> StepContext | None:
    """The step executing in this context, or ``None`` outside a running stage."""
    return _current.get()


@contextlib.contextmanager
def running(loaded: LoadedServable, request: Request) -> Iterator[None]:
    """Mark a stage of ``loaded`` serving ``request`` as executing in this context."""
    token = _current.set(StepContext(loaded, request))
    try:
        yield
    finally:
        _current.reset(token)

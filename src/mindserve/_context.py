"""The step context: which running version a stage executes in, and which call it serves,
so that ``Model.call`` inside the stage runs on that version, bounded by the caller's
timeout and cancellation."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from mindserve._calls import Request
from mindserve._outcomes import Outcome


class RunningVersion(Protocol):
    """What a stage reaches of the running version it executes in (a
    ``LoadedServable``): its models, by name, and running one of them for a call."""

    @property
    def models(self) -> Mapping[str, Any]: ...

    def run_model(
        self, model: Any, instances: Sequence[tuple[Any, ...]], request: Request
    ) -> list[Outcome]: ...


class StepContext(NamedTuple):
    """The running version whose stage executes here, and the call it serves."""

    loaded: RunningVersion
    request: Request


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("mindserve_step", default=None)


def current_step() -> StepContext | None:
    """The step executing in this context, or ``None`` outside a running stage."""
    return _current.get()


@contextlib.contextmanager
def running(loaded: RunningVersion, request: Request) -> Iterator[None]:
    """Mark a stage of ``loaded`` serving ``request`` as executing in this context."""
    token = _current.set(StepContext(loaded, request))
    try:
        yield
    finally:
        _current.reset(token)

"""How one instance's failure travels through a pipeline before it gets its location,
and which threads are mindserve's own (where no exception may escape)."""

from __future__ import annotations

import threading
from typing import Union

import attrs

from mindserve._errors import InstanceError


@attrs.frozen
class Failure:
    """An instance failed: the error class to raise and the message without a location."""

    error: type[InstanceError]
    detail: str
    cause: BaseException | None = None

    def to_exception(self, *, servable: str, version: int, method: str, index: int) -> InstanceError:
        exc = self.error(self.detail, servable=servable, version=version, method=method, index=index)
        exc.__cause__ = self.cause
        return exc


#: What a stage or a model gives back for one instance: its outputs, or a failure.
Outcome = Union[tuple, Failure]

_service = threading.local()


def mark_service_thread() -> None:
    """Mark this thread as mindserve's own (a scheduler's executor, an async-call pool thread)."""
    _service.active = True


def in_caller_thread(exc: BaseException) -> bool:
    """Whether ``exc`` must reach the caller as it is: a ``KeyboardInterrupt`` in a caller's
    own thread. Anything else, and anything in mindserve's threads, becomes an instance
    failure."""
    return isinstance(exc, KeyboardInterrupt) and not getattr(_service, "active", False)

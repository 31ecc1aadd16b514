"""What a step gives back for one instance: its outputs, or a :class:`Failure`; and why a
call stopped waiting for its instances (:class:`Abandoned`).

A failure travels through a pipeline as a value, without its location; the call's end
turns it into the :class:`~mindserve.InstanceError` its caller sees.
"""

from __future__ import annotations

import enum
from typing import Union

import attrs

from mindserve._errors import InstanceError


class Abandoned(str, enum.Enum):
    """Why a call stopped waiting for its instances."""

    CANCELLED = "cancelled"  # its caller cancelled it (a future, an asyncio task)
    DEADLINE = "deadline"  # its timeout passed
    CLOSED = "closed"  # the runtime closed and gave up on it


@attrs.frozen
class Failure:
    """An instance failed: the error class to raise and the message without a location."""

    error: type[InstanceError]
    detail: str
    cause: BaseException | None = None
    #: Whether the instance never ran because its call gave up (deadline, cancel, close).
    dropped: bool = False

    def to_exception(self, *, servable: str, version: int, method: str, index: int) -> InstanceError:
        exc = self.error(self.detail, servable=servable, version=version, method=method, index=index)
        exc.__cause__ = self.cause
        return exc


#: What a stage or a model gives back for one instance: its outputs, or a failure.
Outcome = Union[tuple, Failure]

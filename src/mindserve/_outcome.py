"""How one instance's failure travels through a pipeline before it gets its location."""

from __future__ import annotations

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

"""How MindSpore Serving words a reply: shared by the compat client and the RESTful app.

A reply holds one entry per instance: its outputs, or its error message. When every
instance failed with the same message (a request of one instance, or a whole batch that
failed the same way), MindSpore Serving replies with that one message instead. A request
that reaches no servable (a name, version or method that is not running) is one error
worded ``Request servable(<name>) method(<method>) ..., servable is not available``.
"""

from __future__ import annotations

from typing import Any

from mindserve._errors import InstanceError, MethodNotFoundError, ServableNotFoundError, VersionNotFoundError
from mindserve.compat.register import StageCallFailed


def instance_message(error: InstanceError) -> str:
    """An instance's error as MindSpore Serving words it: a failed stage function's own
    message (``Call Function '...' Failed, ...``), else mindserve's."""
    cause = error.__cause__
    if isinstance(cause, StageCallFailed):
        return str(cause)
    return error.detail


def one_error(results: list[Any]) -> str | None:
    """The single message MindSpore Serving replies with when every instance failed the
    same way; ``None`` otherwise."""
    if not results or not all(isinstance(r, InstanceError) for r in results):
        return None
    messages = {instance_message(r) for r in results}
    return messages.pop() if len(messages) == 1 else None


def request_error(servable: str, method: str, version: int, exc: Exception) -> str:
    """A whole request's error, MindSpore Serving's words first for a servable, version or
    method that is not running."""
    shown = f" version({version}) " if version > 0 else ""
    request = f"Request servable({servable}) method({method}) {shown}"
    if isinstance(exc, (ServableNotFoundError, VersionNotFoundError)):
        return f"{request}, servable is not available. {exc}"
    if isinstance(exc, MethodNotFoundError):
        return f"{request}, method is not available. {exc}"
    return str(exc)

"""MindSpore Serving's wording, shared by :mod:`mindserve.compat` and :mod:`mindserve.http`.

Both speak as MindSpore Serving does: its client (``mindserve.compat.client``) and its
RESTful protocol (``mindserve.http``). What they say alike lives here, below both, so
that neither imports the other:

* how a stage function's failure is worded (:class:`StageCallFailed`);
* how a reply is worded. A reply holds one entry per instance: its outputs, or its error
  message. When every instance failed with the same message (a request of one instance,
  or a whole batch that failed the same way), MindSpore Serving replies with that one
  message instead. A request that reaches no servable (a name, version or method that is
  not running) is one error worded ``Request servable(<name>) method(<method>) ...,
  servable is not available``;
* which values a stage may return, as the tensors they become (:func:`stage_output`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mindserve._errors import InstanceError, MethodNotFoundError, ServableNotFoundError, VersionNotFoundError

#: The numpy dtypes a MindSpore Serving tensor can hold.
TENSOR_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        np.bool_,
        np.int8,
        np.uint8,
        np.int16,
        np.uint16,
        np.int32,
        np.uint32,
        np.int64,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    )
)


class StageCallFailed(RuntimeError):
    """A stage function failed; the message is MindSpore Serving's: ``Call <tag> Failed,
    method: '<method>', stage index(begin with 1): <n>, error msg: <error>``."""


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


def stage_output(value: Any) -> Any:
    """One output of a stage, as the tensor it becomes; ``RuntimeError`` (with MindSpore
    Serving's wording) when it cannot be one."""
    if callable(getattr(value, "asnumpy", None)):  # a MindSpore Tensor
        value = value.asnumpy()
    if isinstance(value, (bytes, str)):
        return value
    if isinstance(value, bool):
        return np.array(value)
    if isinstance(value, int):
        try:
            return np.array(value, np.int64)
        except OverflowError:
            raise RuntimeError(f"Get illegal result data with type {type(value)}") from None
    if isinstance(value, float):
        return np.array(value, np.float64)
    if isinstance(value, (np.ndarray, np.generic)):  # np.generic: numpy bool scalars too
        array = np.asarray(value)
        if array.dtype in TENSOR_DTYPES:  # (ascontiguousarray would make a 0-d array 1-d)
            return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    raise RuntimeError(f"Get illegal result data with type {type(value)}")

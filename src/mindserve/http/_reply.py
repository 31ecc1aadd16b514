"""The reply of MindSpore Serving's RESTful protocol: ``{"instances": [{"<output>": value, ...},
...]}`` with ``{"error_msg": "..."}`` in place of a failed instance, or ``{"error_msg":
"..."}`` alone for a request that failed as a whole (every instance the same way, or before
any ran).

Outputs are sent by one of two rules:

* :func:`tensor_json`, MindSpore Serving's (its compat servables): a tensor (a numpy array
  of a tensor dtype, a number, a bool), a ``str`` or ``bytes``; anything else fails its
  instance with ``Get illegal result data with type ...``;
* :func:`native_json`, :class:`~mindserve.http.RestApp`'s own: any value JSON can hold
  (numbers, bools, ``None``, ``str``, lists, tuples, dicts with ``str`` keys, numpy arrays
  of a numeric, bool, string or object dtype, numpy scalars, MindSpore tensors), ``bytes``
  as ``{"b64": "..."}``.

Both send arrays as nested lists, non-finite floats as ``null`` (as MindSpore Serving's JSON
writer does).
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from mindserve._serving_wording import stage_output

__all__ = ["Unsendable", "native_json", "tensor_json"]

#: How deeply lists and dicts may nest in an output (a list holding itself never ends).
_MAX_NESTING = 64
_INT64_MIN = -(2**63)
_UINT64_END = 2**64


class Unsendable(RuntimeError):
    """An output that the reply cannot hold; the message says what it was."""


def tensor_json(value: Any) -> Any:
    """One output by MindSpore Serving's rule."""
    try:
        value = stage_output(value)
    except RuntimeError as exc:
        raise Unsendable(str(exc)) from None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return _b64(value)
    return _array_json(value)


def native_json(value: Any, depth: int = 0) -> Any:
    """One output by :class:`~mindserve.http.RestApp`'s own rule."""
    if type(value) is np.ndarray and value.dtype.kind in "biuf" and depth < _MAX_NESTING:  # the usual output
        return _array_json(value)
    if isinstance(value, np.generic):  # before the Python types: np.float64 is a float
        value = np.asarray(value)
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value < _UINT64_END:
            raise Unsendable(f"the integer {_digits(value)} is beyond 64 bits, which JSON readers lose")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _b64(bytes(value))
    if callable(getattr(value, "asnumpy", None)):  # a MindSpore Tensor
        value = value.asnumpy()
    if depth >= _MAX_NESTING:
        raise Unsendable(f"lists or dicts nested deeper than {_MAX_NESTING} levels")
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind in "biuf":
            return _array_json(value)
        if kind == "U":
            return value.tolist()
        if kind in "SO":
            return native_json(value.tolist(), depth + 1)
        raise Unsendable(f"a numpy array of dtype {value.dtype}, which JSON cannot hold")
    if isinstance(value, (list, tuple)):
        return [native_json(item, depth + 1) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise Unsendable(f"a dict with a {type(key).__name__} key; JSON keys are str")
        return {key: native_json(item, depth + 1) for key, item in value.items()}
    raise Unsendable(
        f"a {type(value).__module__}.{type(value).__qualname__}, which JSON cannot hold; return numbers, "
        f"str, bytes, lists, tuples, dicts with str keys or numpy arrays"
    )


def _array_json(value: Any) -> Any:
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        value = np.where(np.isfinite(value), value.astype(np.float64), None)
    return value.tolist()


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def _digits(value: int) -> str:
    text = str(value) if value.bit_length() < 4000 else f"of {value.bit_length()} bits"
    return text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"

"""Values as MindSpore Serving hands them over: every value is a tensor on its way.

MindSpore Serving's client turns each input into a tensor (``bytes`` and ``str`` into byte
strings, Python numbers into arrays of shape ``[1]``), and its worker hands Python stages
numpy arrays: a ``bytes`` value arrives as a 1-D ``uint8`` array, a ``str`` as ``str``.
What a stage returns becomes a tensor again (Python numbers as arrays of shape ``[]``);
anything that is not one fails its instance. These helpers restate those rules for
``mindserve.compat``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mindserve._serving_wording import TENSOR_DTYPES, stage_output

__all__ = ["TENSOR_DTYPES", "client_value", "stage_input", "stage_output", "stage_outputs"]


def client_value(value: Any) -> Any:
    """An input value as MindSpore Serving's client sends it; ``RuntimeError`` (with its
    wording) for a value it refuses."""
    if isinstance(value, (np.ndarray, np.number)):
        array = np.asarray(value)
        if array.dtype not in TENSOR_DTYPES:
            raise RuntimeError(f"Unknown data type {array.dtype}")
        return array
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, (bool, int, float)):
        try:
            array = np.array((value,))
        except OverflowError:
            raise RuntimeError(f"Unknown data type {type(value)}") from None
        if array.dtype not in TENSOR_DTYPES:
            raise RuntimeError(f"Unknown data type {array.dtype}")
        return array
    raise RuntimeError(f"Not support value type {type(value)}")


def stage_input(value: Any) -> Any:
    """A value as a Python stage receives it: ``bytes`` as a 1-D ``uint8`` array."""
    if isinstance(value, bytes):
        return np.frombuffer(value, np.uint8).copy()
    return value


def stage_outputs(result: Any, outputs: int, function: str, method: str) -> Any:
    """A stage's result for one instance, checked and converted as MindSpore Serving does:
    a tuple or list holds the outputs, anything else is the only one."""
    values = result if isinstance(result, (tuple, list)) else (result,)
    if len(values) != outputs:
        raise RuntimeError(
            f"The outputs number {len(values)} of one instance returned by function '{function}' is not "
            f"equal to the outputs number {outputs} registered in method {method}"
        )
    converted = tuple(stage_output(v) for v in values)
    return converted[0] if outputs == 1 else converted

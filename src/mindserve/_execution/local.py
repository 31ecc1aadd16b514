"""The executors of this process (:class:`~mindserve._execution.executor.Executor`).

* :class:`NetworkExecutor` runs a MindSpore network: a MindIR file loaded as an
  ``nn.GraphCell`` or an in-memory ``nn.Cell``, always under MindSpore's process lock.
* :class:`CallableExecutor` runs a Python callable on numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import numpy as np

from mindserve._calls import Request
from mindserve._execution import mindspore as _mindspore
from mindserve._execution.executor import warm_up
from mindserve._execution.memory import release_free_memory
from mindserve._execution.plan import ModelPlan, WarmUp
from mindserve._values import TensorSpec


class NetworkExecutor:
    """A MindSpore network (``nn.GraphCell`` from MindIR, or an ``nn.Cell``)."""

    capacity = 1  # MindSpore crashes when one network is entered from two threads
    inline = True

    def __init__(self, network: Any, input_specs: tuple[TensorSpec, ...] | None = None) -> None:
        self.network: Any = network
        self.input_specs = input_specs
        #: The input shapes it has run: MindSpore compiles a graph for each.
        self.shapes: set[tuple[tuple[int, ...], ...]] = set()

    @property
    def graphs(self) -> int:
        """How many graphs MindSpore compiled for it (one per distinct input shapes)."""
        return len(self.shapes)

    def run(self, arrays: tuple[np.ndarray, ...], requests: Sequence[Request] = ()) -> tuple[np.ndarray, ...]:
        self.shapes.add(tuple([a.shape for a in arrays]))
        return _mindspore.run_network(self.network, arrays)

    def warm_up(self, plan: ModelPlan) -> WarmUp:
        return warm_up(plan, self)

    def close(self) -> None:
        self.network = None  # the weights go with the last reference
        release_free_memory()


class CallableExecutor:
    """A Python callable taking numpy arrays and returning an array or a tuple of arrays."""

    input_specs: tuple[TensorSpec, ...] | None = None
    capacity = 1  # a user's function is not assumed to be thread-safe
    inline = True

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def warm_up(self, plan: ModelPlan) -> WarmUp:
        return warm_up(plan, self)

    def close(self) -> None:
        pass

    def run(self, arrays: tuple[np.ndarray, ...], requests: Sequence[Request] = ()) -> tuple[np.ndarray, ...]:
        outputs = self.function(*arrays)
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        return tuple(_output_array(position, o) for position, o in enumerate(outputs))


def _output_array(position: int, value: Any) -> np.ndarray:
    """A callable model's output as an array; a TypeError naming what it returned when
    that is no array at all (None, a dict, a generator, a lone object)."""
    if isinstance(value, np.ndarray):
        return value
    array = (
        None if value is None or isinstance(value, (Mapping, Iterator, set, frozenset)) else np.asarray(value)
    )
    if array is None or (array.dtype == object and array.ndim == 0):
        raise TypeError(
            f"output {position} is {type(value).__name__}; a callable model must return a numpy array "
            f"(or a tuple or list of arrays, one per output)"
        )
    return array

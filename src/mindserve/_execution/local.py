"""The executors of this process (:class:`~mindserve._execution.executor.Executor`).

* :class:`NetworkExecutor` runs a MindSpore network: a MindIR file loaded as an
  ``nn.GraphCell`` or an in-memory ``nn.Cell``, always under MindSpore's process lock.
* :class:`CallableExecutor` runs a Python callable on numpy arrays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import numpy as np

from mindserve._calls import Request
from mindserve._errors import counted
from mindserve._execution import mindspore as _mindspore
from mindserve._execution.executor import warm_up
from mindserve._execution.memory import release_free_memory
from mindserve._execution.plan import ModelPlan, WarmUp
from mindserve._values import TensorSpec

logger = logging.getLogger("mindserve")


class NetworkExecutor:
    """A MindSpore network (``nn.GraphCell`` from MindIR, or an ``nn.Cell``)."""

    capacity = 1  # MindSpore crashes when one network is entered from two threads
    inline = True
    reads_only = True  # a MindSpore graph never writes to its inputs

    #: Runs of a network after which MindSpore may still start threads (each registers its own
    #: SIGINT handler): Python's handling is restored again over the seconds after them.
    _SETTLING_RUNS = 3

    def __init__(self, network: Any, input_specs: tuple[TensorSpec, ...] | None = None) -> None:
        self.network: Any = network
        self.input_specs = input_specs
        self._unsettled = self._SETTLING_RUNS
        #: The dtype and shape of each input of the last batch that ran (they explain a refusal).
        self._ran: tuple[tuple[np.dtype, tuple[int, ...]], ...] | None = None
        #: The input shapes it has run: MindSpore compiles a graph for each.
        self.shapes: set[tuple[tuple[int, ...], ...]] = set()
        #: Set by the warm-up (where and which model): a graph compiled after it is logged.
        self._warmed: tuple[str, str] | None = None

    @property
    def graphs(self) -> int:
        """How many graphs MindSpore compiled for it (one per distinct input shapes)."""
        return len(self.shapes)

    def run(self, arrays: tuple[np.ndarray, ...], requests: Sequence[Request] = ()) -> tuple[np.ndarray, ...]:
        shapes = tuple([a.shape for a in arrays])
        new = shapes not in self.shapes
        self.shapes.add(shapes)
        started = time.perf_counter() if new else 0.0
        if self._unsettled:
            self._unsettled -= 1
            outputs = _mindspore.run_network(self.network, arrays, settle=True)
        else:
            outputs = _mindspore.run_network(self.network, arrays)
        self._ran = tuple((a.dtype, a.shape) for a in arrays)
        if new and self._warmed is not None:
            self._log_compile(shapes, time.perf_counter() - started)
        return outputs

    def _log_compile(self, shapes: tuple[tuple[int, ...], ...], seconds: float) -> None:
        """Once per shape: a graph compiled after the warm-up (the batch that paid for it)."""
        where, name = self._warmed  # type: ignore[misc]
        logger.info(
            "%s: model '%s' compiled a graph for new input shapes %s after its warm-up; that batch took "
            "%.2f s (%s now). Hint: widen the warm-up (Batching buckets, Padding buckets) to "
            "compile it at load",
            where,
            name,
            ", ".join(str(s) for s in shapes),
            seconds,
            counted(len(self.shapes), "graph"),
        )

    def explain(self, arrays: tuple[np.ndarray, ...], batched: bool) -> str | None:
        """What was expected of the inputs of a batch MindSpore refused, and what arrived
        (``input 0: expected float32 ...; got float64 array of shape (1, 32, 32)``): the
        dtypes and shapes of the last batch that ran, else the dtype of the network's
        parameters; ``None`` when nothing differs from what is known, or when the model's
        file declares its inputs (they were checked before the run)."""
        if self.input_specs is not None:
            return None
        ran = self._ran
        if ran is not None and len(ran) != len(arrays):
            ran = None
        parameters = _mindspore.parameter_dtype(self.network) if ran is None else None
        for position, array in enumerate(arrays):
            shape = array.shape[1:] if batched else array.shape
            got = f"got {array.dtype} array of shape {shape}"
            if ran is not None:
                dtype, expected_shape = ran[position]
                expected_shape = expected_shape[1:] if batched else expected_shape
                if dtype != array.dtype or expected_shape != shape:
                    return (
                        f"input {position}: expected {dtype} array of shape {expected_shape} "
                        f"(as it last ran); {got}"
                    )
            elif parameters is not None and array.dtype.kind == "f" and array.dtype != parameters:
                return f"input {position}: expected {parameters} (the dtype of its parameters); {got}"
        return None

    def warm_up(self, plan: ModelPlan) -> WarmUp:
        warmed = warm_up(plan, self)
        self._warmed = (plan.where, plan.name)
        return warmed

    def close(self) -> None:
        self.network = None  # the weights go with the last reference
        release_free_memory()


class CallableExecutor:
    """A Python callable taking numpy arrays and returning an array or a tuple of arrays."""

    input_specs: tuple[TensorSpec, ...] | None = None
    capacity = 1  # a user's function is not assumed to be thread-safe
    inline = True
    reads_only = False  # a user's function may change its arrays in place

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

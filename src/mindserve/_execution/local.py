"""Model backends: what actually computes a batch, behind one small interface.

* :class:`NetworkBackend` runs a MindSpore network: a MindIR file loaded as an
  ``nn.GraphCell`` or an in-memory ``nn.Cell``, always under MindSpore's process lock.
* :class:`CallableBackend` runs a Python callable on numpy arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable, Protocol

import numpy as np

from mindserve._calls import Request
from mindserve._define.model import Model
from mindserve._errors import LoadError
from mindserve._execution import mindspore as _mindspore
from mindserve._execution.integrity import check_model_file
from mindserve._execution.memory import release_free_memory
from mindserve._values import TensorSpec


class Backend(Protocol):
    """Runs batches of one model: the seam between a model's scheduler and what computes.

    ``input_specs`` (with the batch dimension) is ``None`` when unknown. ``capacity``: how
    many batches it can run at once (the scheduler never runs more): 1 in this process,
    where MindSpore must not be entered twice; one per worker for a pool of processes.
    ``run`` computes one batch for ``requests`` (the calls it serves) and may raise
    anything: the model's queue turns it into instance errors. ``close`` releases what it
    holds; it is called once, when the version unloads.
    """

    input_specs: tuple[TensorSpec, ...] | None
    capacity: int
    #: Whether a caller's thread may run a batch itself when the model is idle.
    inline: bool

    def run(
        self, arrays: tuple[np.ndarray, ...], requests: Sequence[Request] = ()
    ) -> tuple[np.ndarray, ...]: ...

    def close(self) -> None: ...


class NetworkBackend:
    """A MindSpore network (``nn.GraphCell`` from MindIR, or an ``nn.Cell``)."""

    capacity = 1  # MindSpore crashes when one network is entered from two threads
    inline = True

    def __init__(self, network: Any, input_specs: tuple[TensorSpec, ...] | None = None) -> None:
        self.network: Any = network
        self.input_specs = input_specs

    def run(self, arrays: tuple[np.ndarray, ...], requests: Sequence[Request] = ()) -> tuple[np.ndarray, ...]:
        return _mindspore.run_network(self.network, arrays)

    def close(self) -> None:
        self.network = None  # the weights go with the last reference
        release_free_memory()


class CallableBackend:
    """A Python callable taking numpy arrays and returning an array or a tuple of arrays."""

    input_specs: tuple[TensorSpec, ...] | None = None
    capacity = 1  # a user's function is not assumed to be thread-safe
    inline = True

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

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


def model_path(model: Model, version_dir: str | None) -> str:
    """Where a MindIR model's file is: relative paths are inside the version directory."""
    path = model.source
    if not os.path.isabs(path):
        path = os.path.join(version_dir or os.getcwd(), path)
    return os.path.abspath(path)


def open_backend(
    model: Model, version_dir: str | None, device: tuple[str | None, int], where: str
) -> Backend:
    """Load a model's backend; any failure is a :class:`LoadError` naming ``where``."""
    if model.kind == "callable":
        return CallableBackend(model.source)
    if model.kind == "cell":
        _mindspore.use_device(*device)
        with _mindspore.mindspore_lock():
            model.source.set_train(False)
        return NetworkBackend(model.source)
    path = model_path(model, version_dir)
    if not os.path.isfile(path):
        missing = LoadError(f"{where}: model '{model.name}': file {path!r} does not exist")
        missing.model_file = path  # type: ignore[attr-defined]  # for mindserve.compat's wording
        raise missing
    check_model_file(path, model.sha256, version_dir, f"{where}: model '{model.name}'")
    _mindspore.use_device(*device)
    try:
        network = _mindspore.load_mindir(path, model.dec_key, model.dec_mode)
    except Exception as exc:
        hint = (
            " Hint: check dec_key and dec_mode, the key and mode the file was exported with."
            if model.dec_key is not None
            else " Hint: is it a complete MindIR file, exported by mindspore.export?"
        )
        failed = LoadError(
            f"{where}: model '{model.name}': MindSpore cannot load {path!r}: "
            f"{_mindspore.first_line(exc).rstrip('.')}.{hint}"
        )
        failed.model_file = path  # type: ignore[attr-defined]  # for mindserve.compat's wording
        raise failed from exc
    specs = _mindspore.read_mindir_signature(path, model.dec_key, model.dec_mode)
    return NetworkBackend(network, specs)

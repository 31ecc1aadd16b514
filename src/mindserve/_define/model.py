"""The model handle that :meth:`Servable.model` returns.

A ``Model`` is a declaration: what to load (a MindIR path, an ``nn.Cell`` or a Python
callable) and how to batch it. Called inside a method it records a step; called inside
a running stage (``model.call(...)``) it runs on the servable version that is serving
the request, through the same serialized path as a method's model step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mindserve._calls import Failure, current_step
from mindserve._config import Batching
from mindserve._define.stage import check_outputs
from mindserve._define.tracing import active_trace
from mindserve._errors import DefinitionError, MindServeError, counted, refuse_async

#: Encryption modes MindSpore accepts for MindIR files.
DEC_MODES = ("AES-GCM", "AES-CBC", "SM4-CBC")


def is_cell(obj: object) -> bool:
    """Whether ``obj`` is a MindSpore ``nn.Cell`` (without importing MindSpore)."""
    return any(cls.__name__ == "Cell" and cls.__module__.startswith("mindspore") for cls in type(obj).__mro__)


def _model_kind(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path.endswith(".mindir"):
            raise DefinitionError(f"a model file must be a MindIR file ending in '.mindir'; got {path!r}")
        if not os.path.isabs(path) and os.path.normpath(path).split(os.sep)[0] == os.pardir:
            raise DefinitionError(
                f"a relative model path must stay inside the version directory; got {path!r}. "
                f"Hint: put the file in the version directory, or give an absolute path."
            )
        return "mindir"
    if is_cell(source):
        return "cell"
    if callable(source):
        return "callable"
    raise DefinitionError(
        "a model must be a MindIR path, a mindspore.nn.Cell or a Python callable on numpy "
        f"arrays; got {type(source).__name__}"
    )


def _default_name(source: Any, kind: str) -> str:
    if kind == "mindir":
        return os.path.splitext(os.path.basename(os.fspath(source)))[0]
    if kind == "cell":
        return type(source).__name__
    name = getattr(source, "__name__", type(source).__name__)
    return "model" if name == "<lambda>" else name


class Model:
    """A model of a servable; create it with :meth:`Servable.model`."""

    def __init__(
        self,
        servable: str,
        source: Any,
        *,
        name: str | None = None,
        with_batch_dim: bool = True,
        without_batch_dim_inputs: Sequence[int] | int | None = None,
        outputs: int = 1,
        dec_key: bytes | None = None,
        dec_mode: str = "AES-GCM",
        batching: Batching | None = None,
        sha256: str | None = None,
    ) -> None:
        self.kind = _model_kind(source)
        self.source = os.fspath(source) if self.kind == "mindir" else source
        self.servable = servable
        self.name = name or _default_name(source, self.kind)
        if self.kind == "callable":
            refuse_async(source, f"model '{self.name}'")
        self.with_batch_dim = bool(with_batch_dim)
        self.without_batch_dim_inputs = _indices(without_batch_dim_inputs)
        if self.without_batch_dim_inputs and not self.with_batch_dim:
            raise DefinitionError(
                f"model '{self.name}': without_batch_dim_inputs only applies when with_batch_dim=True"
            )
        #: How many outputs it returns (checked on every batch); ``None``: whatever the
        #: model file gives (mindserve.compat, as MindSpore Serving).
        self.outputs: int | None = check_outputs(outputs, f"model '{self.name}'")
        if dec_key is not None:
            if self.kind != "mindir":
                raise DefinitionError(f"model '{self.name}': dec_key only applies to MindIR files")
            if not isinstance(dec_key, bytes) or len(dec_key) not in (16, 24, 32):
                got = f"{len(dec_key)} bytes" if isinstance(dec_key, bytes) else type(dec_key).__name__
                raise DefinitionError(
                    f"model '{self.name}': dec_key must be bytes of length 16, 24 or 32; got {got}"
                )
        if dec_mode not in DEC_MODES:
            raise DefinitionError(
                f"model '{self.name}': dec_mode must be one of {list(DEC_MODES)}; got {dec_mode!r}"
            )
        self.dec_key = dec_key
        self.dec_mode = dec_mode
        if sha256 is not None:
            if self.kind != "mindir":
                raise DefinitionError(f"model '{self.name}': sha256 only applies to MindIR files")
            if (
                not isinstance(sha256, str)
                or len(sha256) != 64
                or any(c not in "0123456789abcdefABCDEF" for c in sha256)
            ):
                raise DefinitionError(
                    f"model '{self.name}': sha256 must be 64 hexadecimal digits (as sha256sum prints); got {sha256!r}"
                )
        #: The file's SHA-256, checked at every load when given.
        self.sha256 = sha256
        if batching is not None and not isinstance(batching, Batching):
            raise DefinitionError(
                f"model '{self.name}': batching must be a mindserve.Batching; got {type(batching).__name__}"
            )
        self.batching = batching
        #: Reshape an input of the right dtype and size to the model's shape (MindSpore
        #: Serving's rule, used by mindserve.compat).
        self.reshape_inputs = False
        #: How many inputs the methods call it with (set by the first traced call).
        self.inputs: int | None = None
        #: The model this one stands in for in a test (``mindserve.testing.replace_models``),
        #: so that ``Model.call`` on the original reaches it.
        self.stands_in_for: Model | None = None

    def __repr__(self) -> str:
        source = self.source if self.kind == "mindir" else type(self.source).__name__
        return f"<Model {self.name!r} of servable {self.servable!r}: {self.kind} {source}>"

    def __call__(self, *args: Any) -> Any:
        trace = active_trace()
        if trace is None:
            return self.call(*args)
        if self.inputs is not None and len(args) != self.inputs:
            raise DefinitionError(
                f"method '{trace.method}' calls model '{self.name}' with {counted(len(args), 'input')}; "
                f"it was called with {self.inputs} before"
            )
        if self.outputs is None:
            raise DefinitionError(
                f"method '{trace.method}' calls model '{self.name}', whose output count is not declared"
            )
        result = trace.record(self, "model", args, self.outputs)
        self.inputs = len(args)
        return result

    def call(self, *args: Any) -> Any:
        """Run the model on one instance's inputs, inside a stage of a running servable.

        Returns the output, or a tuple of outputs when the model has several. Use it for
        conditions and loops that a method's straight-line body cannot express.
        """
        (outcome,) = self.call_many([args])
        return outcome[0] if len(outcome) == 1 else outcome

    def call_many(self, instances: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Run the model on several instances (each a sequence of its inputs), inside a stage.

        Returns one tuple of outputs per instance; raises the first instance's error.
        """
        step = current_step()
        if step is None:
            raise MindServeError(
                f"model '{self.name}' can only run inside a stage of a running servable "
                f"(or be called in a method body, which records it). Hint: start the servable "
                f"with Runtime.start() and call this from a stage."
            )
        outcomes = step.loaded.run_model(self, [tuple(instance) for instance in instances], step.request)
        for outcome in outcomes:
            if isinstance(outcome, Failure):
                raise outcome.error(outcome.detail) from outcome.cause
        return [tuple(outcome) for outcome in outcomes if not isinstance(outcome, Failure)]


def _indices(value: Sequence[int] | int | None) -> tuple[int, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, int) else tuple(value)
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in items):
        raise DefinitionError(f"without_batch_dim_inputs must be input indices (ints >= 0); got {value!r}")
    return tuple(sorted(set(items)))

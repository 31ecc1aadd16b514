"""The model handle that :meth:`Servable.model` returns.

A ``Model`` is a declaration: what to load (a MindIR path, an ``nn.Cell`` or a Python
callable) and how to batch it. Called inside a method it records a step; called inside
a running stage (``model.call(...)``) it runs on the servable version that is serving
the request, through the same serialized path as a method's model step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from typing_extensions import TypedDict

from mindserve._config import Batching, Padding
from mindserve._context import current_step
from mindserve._define.stage import check_outputs
from mindserve._define.tracing import active_trace
from mindserve._errors import DefinitionError, MindServeError, counted
from mindserve._execution.sources import ModelSource, source_of
from mindserve._outcomes import Failure

#: Encryption modes MindSpore accepts for MindIR files.
DEC_MODES = ("AES-GCM", "AES-CBC", "SM4-CBC")


class ModelOptions(TypedDict, total=False):
    """The keyword options of :class:`Model`, as :meth:`Servable.model` passes them on
    (``**options: Unpack[ModelOptions]``: editors and mypy check them there). Each is a
    keyword-only parameter of ``Model.__init__``, with the same type; a unit test keeps
    the two lists equal, and mypy checks the call that passes them on."""

    name: str | None
    with_batch_dim: bool
    without_batch_dim_inputs: Sequence[int] | int | None
    outputs: int
    dec_key: bytes | None
    dec_mode: str
    batching: Batching | None
    sha256: str | None
    padding: Padding | None


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
        padding: Padding | None = None,
    ) -> None:
        origin = source_of(source)
        self.servable = servable
        self.name = name or origin.default_name()
        origin.check(self.name)
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
            if not origin.needs_files:
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
        if sha256 is not None:
            if not origin.needs_files:
                raise DefinitionError(f"model '{self.name}': sha256 only applies to MindIR files")
            if (
                not isinstance(sha256, str)
                or len(sha256) != 64
                or any(c not in "0123456789abcdefABCDEF" for c in sha256)
            ):
                raise DefinitionError(
                    f"model '{self.name}': sha256 must be 64 hexadecimal digits (as sha256sum prints); got {sha256!r}"
                )
        #: The encryption mode as declared (it applies only with ``dec_key``).
        self.dec_mode = dec_mode
        #: What it is made from, and how it opens (its file's key and SHA-256 included).
        self.origin: ModelSource = origin.with_file_options(dec_key, dec_mode, sha256)
        if batching is not None and not isinstance(batching, Batching):
            raise DefinitionError(
                f"model '{self.name}': batching must be a mindserve.Batching; got {type(batching).__name__}"
            )
        self.batching = batching
        if padding is not None and not isinstance(padding, Padding):
            raise DefinitionError(
                f"model '{self.name}': padding must be a mindserve.Padding; got {type(padding).__name__}"
            )
        if padding is not None and padding.enabled and not self.with_batch_dim:
            raise DefinitionError(f"model '{self.name}': padding pads batches; it needs with_batch_dim=True")
        #: How its variable-length inputs are padded (see docs/batching.md); ``None``: as the
        #: model file says (padded when a load-time probe shows it safe).
        self.padding = padding
        #: Reshape an input of the right dtype and size to the model's shape (MindSpore
        #: Serving's rule, used by mindserve.compat).
        self.reshape_inputs = False
        #: How many inputs the methods call it with (set by the first traced call).
        self.inputs: int | None = None

    @property
    def kind(self) -> str:
        """``mindir``, ``cell`` or ``callable``."""
        return self.origin.kind

    @property
    def source(self) -> Any:
        """What it was declared with: a MindIR path, an ``nn.Cell`` or a callable."""
        return self.origin.value

    @property
    def dec_key(self) -> bytes | None:
        """The key its MindIR file was exported with, if any."""
        return self.origin.dec_key

    @property
    def sha256(self) -> str | None:
        """The file's SHA-256, checked at every load when given."""
        return self.origin.sha256

    def __repr__(self) -> str:
        return f"<Model {self.name!r} of servable {self.servable!r}: {self.kind} {self.origin.label()}>"

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
                error = outcome.error(outcome.detail)
                # The stage's own mistake, not a client's value the stage refused.
                error._from_model_call = True  # type: ignore[attr-defined]
                raise error from outcome.cause
        return [tuple(outcome) for outcome in outcomes if not isinstance(outcome, Failure)]


def _indices(value: Sequence[int] | int | None) -> tuple[int, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, int) else tuple(value)
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in items):
        raise DefinitionError(f"without_batch_dim_inputs must be input indices (ints >= 0); got {value!r}")
    return tuple(sorted(set(items)))

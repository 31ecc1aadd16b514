"""Methods: named pipelines of stages and models, traced once when they are defined."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Callable

import attrs

from mindserve._define.model import Model
from mindserve._define.stage import Stage
from mindserve._define.tracing import Placeholder, Step, Trace, trace
from mindserve._errors import DefinitionError, counted


@attrs.frozen
class Method:
    """A traced method: its input and output names and the steps between them."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    steps: tuple[Step, ...]
    output_refs: tuple[int, ...]
    #: What each ref stands for, for messages ("input 'image'", "output 0 of stage 'f'").
    labels: tuple[str, ...]
    function: Callable[..., Any] = attrs.field(eq=False, repr=False)
    #: Whether the method is one model call from its inputs, in order, to its outputs, in
    #: order (``return model(x)``): the pipeline then skips its per-instance bookkeeping.
    direct: bool = attrs.field(init=False, eq=False, repr=False)
    #: Whether a step runs user code once per instance (a stage with no ``batch_size``):
    #: ``infer_async`` and ``ainfer`` then run the method's stretches on the runtime's pool.
    per_instance_code: bool = attrs.field(init=False, eq=False, repr=False)

    @per_instance_code.default
    def _runs_per_instance_code(self) -> bool:
        return any(isinstance(s.callee, Stage) and s.callee.batch_size is None for s in self.steps)

    @direct.default
    def _is_direct(self) -> bool:
        if len(self.steps) != 1 or not isinstance(self.steps[0].callee, Model):
            return False
        (step,) = self.steps
        return step.args == tuple(range(len(self.inputs))) and step.outputs == self.output_refs

    def arg_labels(self, step: Step) -> tuple[str, ...]:
        """What each argument of a step stands for (for error messages)."""
        return tuple(self.labels[ref] for ref in step.args)


def _input_names(function: Callable[..., Any], name: str) -> tuple[str, ...]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise DefinitionError(f"method '{name}' has no inspectable signature") from None
    names = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind == param.VAR_POSITIONAL else "**"
            raise DefinitionError(
                f"method '{name}' takes {star}{param.name}; a method's inputs must be named "
                f"parameters, one per input"
            )
        if param.default is not param.empty:
            raise DefinitionError(
                f"method '{name}' gives input '{param.name}' a default value; every input of a "
                f"method is required. Hint: move the default into a stage parameter."
            )
        names.append(param.name)
    return tuple(names)


def _output_names(outputs: str | Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    if outputs is None:
        return None
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise DefinitionError(
            f"method '{name}' outputs must be a non-empty list of output names; got {outputs!r}"
        )
    if len(set(names)) != len(names):
        raise DefinitionError(f"method '{name}' names an output twice: {list(names)}")
    return names


def _returned_refs(
    returned: Any, record: Trace, name: str, declared: tuple[str, ...] | None
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if isinstance(returned, dict):
        names, values = tuple(returned), tuple(returned.values())
        if declared is not None and set(declared) != set(names):
            raise DefinitionError(
                f"method '{name}' returns outputs {list(names)} but declares outputs={list(declared)}"
            )
        if declared is not None:
            values = tuple(returned[n] for n in declared)
            names = declared
    else:
        values = tuple(returned) if isinstance(returned, (tuple, list)) else (returned,)
        if declared is None:
            declared = ("output",) if len(values) == 1 else tuple(f"output_{i}" for i in range(len(values)))
        if len(values) != len(declared):
            error = DefinitionError(
                f"method '{name}' returns {counted(len(values), 'value')} but declares "
                f"{len(declared)} outputs {list(declared)}"
            )
            error.returned = len(values)  # type: ignore[attr-defined]  # for mindserve.compat's wording
            raise error
        names = declared
    for output, value in zip(names, values):
        if not isinstance(value, Placeholder) or value.trace is not record:
            error = DefinitionError(
                f"method '{name}' returns {_describe(value)} for output '{output}'; a method must "
                f"return method inputs or outputs of its stages and models"
            )
            error.not_placeholder = True  # type: ignore[attr-defined]  # for mindserve.compat's wording
            raise error
    return names, tuple(v.ref for v in values)


def _describe(value: Any) -> str:
    if isinstance(value, Placeholder):
        return f"{value.label} of another method"
    text = repr(value)
    return f"the literal {text if len(text) <= 40 else text[:37] + '...'}"


def build_method(
    function: Callable[..., Any],
    *,
    servable: str,
    name: str | None = None,
    outputs: str | Sequence[str] | None = None,
) -> Method:
    """Trace ``function`` into a :class:`Method`, rejecting misuse with a clear error."""
    if not callable(function):
        raise DefinitionError(f"a method must be a function; got {function!r}")
    name = name or getattr(function, "__name__", None)
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"a method needs a name; got {name!r}")
    inputs = _input_names(function, name)
    declared = _output_names(outputs, name)
    record, returned = trace(function, name, inputs)
    for step in record.steps:
        if isinstance(step.callee, Model) and step.callee.servable != servable:
            raise DefinitionError(
                f"method '{name}' of servable '{servable}' calls model '{step.callee.name}' of "
                f"servable '{step.callee.servable}'; declare the model on this servable"
            )
    names, refs = _returned_refs(returned, record, name, declared)
    return Method(name, inputs, names, tuple(record.steps), refs, tuple(record.labels), function)

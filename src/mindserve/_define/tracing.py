"""Tracing a method body into a list of steps.

A method is straight-line code over stages and models. It is called once, at
decoration time, with a :class:`Placeholder` for each input; every stage or model it
calls records a :class:`Step` and returns placeholders for the step's outputs. Anything
else done to a placeholder (arithmetic, a condition, an attribute) is a
:class:`~mindserve.DefinitionError` that says why.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import attrs

from mindserve._errors import DefinitionError

_active: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("mindserve_active_trace", default=None)


@attrs.frozen
class Step:
    """One stage or model call in a method: read ``args`` refs, write ``outputs`` refs."""

    callee: Any  # a Stage or a Model
    args: tuple[int, ...]
    outputs: tuple[int, ...]


class Trace:
    """The record of one method body being traced."""

    def __init__(self, method: str, inputs: Sequence[str]) -> None:
        self.method = method
        self.steps: list[Step] = []
        self.labels: list[str] = []
        self.inputs = tuple(self._new(f"input '{name}'") for name in inputs)

    def _new(self, label: str) -> Placeholder:
        self.labels.append(label)
        return Placeholder(self, len(self.labels) - 1)

    def record(self, callee: Any, kind: str, args: Sequence[Any], n_outputs: int) -> Any:
        """Record a call to ``callee``; return its output placeholder(s)."""
        refs = []
        for position, arg in enumerate(args):
            if not isinstance(arg, Placeholder):
                raise DefinitionError(
                    f"method '{self.method}' passes the literal {_short(arg)} as argument "
                    f"{position} of {kind} '{callee.name}'; inside a method, arguments must be "
                    f"method inputs or outputs of earlier stages and models. Hint: give the stage "
                    f"a default parameter, or bind the constant with functools.partial."
                )
            if arg.trace is not self:
                raise DefinitionError(
                    f"method '{self.method}' passes {arg.label} of another method to {kind} '{callee.name}'"
                )
            refs.append(arg.ref)
        outputs = tuple(self._new(f"output {i} of {kind} '{callee.name}'") for i in range(n_outputs))
        self.steps.append(Step(callee, tuple(refs), tuple(p.ref for p in outputs)))
        return outputs[0] if n_outputs == 1 else outputs


def active_trace() -> Trace | None:
    """The trace being recorded in this thread, if any."""
    return _active.get()


def trace(function: Callable[..., Any], method: str, inputs: Sequence[str]) -> tuple[Trace, Any]:
    """Call ``function`` with placeholders; return the trace and what it returned."""
    record = Trace(method, inputs)
    token = _active.set(record)
    try:
        returned = function(*record.inputs)
    finally:
        _active.reset(token)
    return record, returned


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _misuse(operation: str) -> Callable[..., Any]:
    def refuse(self: Placeholder, *args: Any) -> Any:
        raise DefinitionError(
            f"method '{self.trace.method}' {operation} {self.label} while it is traced; a method "
            f"body only passes values between stages and models. Hint: do this inside a stage "
            f"(@svc.stage)."
        )

    return refuse


class Placeholder:
    """Stands for a value while a method body is traced."""

    __slots__ = ("ref", "trace")

    def __init__(self, trace: Trace, ref: int) -> None:
        self.trace = trace
        self.ref = ref

    @property
    def label(self) -> str:
        return self.trace.labels[self.ref]

    def __repr__(self) -> str:
        return f"<placeholder for {self.label}>"

    def __iter__(self) -> Iterator[Any]:
        error = DefinitionError(
            f"method '{self.trace.method}' unpacks {self.label}, which is a single value. "
            f"Hint: declare how many values a stage returns with @svc.stage(outputs=N), or a "
            f"model's with svc.model(..., outputs=N)."
        )
        error.unpacked = True  # type: ignore[attr-defined]  # for mindserve.compat's wording
        raise error

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _misuse(f"reads attribute '{name}' of")(self)

    __bool__ = _misuse("uses in a condition")
    __len__ = _misuse("takes the length of")
    __getitem__ = _misuse("indexes")
    __call__ = _misuse("calls")
    __array__ = _misuse("converts to an array")
    __float__ = _misuse("converts to float")
    __int__ = _misuse("converts to int")
    __index__ = _misuse("uses as an index")
    __lt__ = _misuse("compares")
    __le__ = _misuse("compares")
    __gt__ = _misuse("compares")
    __ge__ = _misuse("compares")
    __neg__ = _misuse("negates")
    __abs__ = _misuse("takes abs() of")
    __invert__ = _misuse("inverts")


_ARITHMETIC = {
    "add": "adds to",
    "sub": "subtracts from",
    "mul": "multiplies",
    "matmul": "multiplies",
    "truediv": "divides",
    "floordiv": "divides",
    "mod": "takes a modulo of",
    "pow": "raises to a power",
    "and": "combines",
    "or": "combines",
    "xor": "combines",
    "lshift": "shifts",
    "rshift": "shifts",
}
for _op, _words in _ARITHMETIC.items():
    setattr(Placeholder, f"__{_op}__", _misuse(_words))
    setattr(Placeholder, f"__r{_op}__", _misuse(_words))

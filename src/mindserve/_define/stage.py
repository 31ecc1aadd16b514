"""Python stages: ordinary functions that a method calls before, between or after models.

A stage with ``batch_size=None`` is called once per instance with that instance's
values. A stage with ``batch_size=k`` (``0`` for "all at once") is called with one list
per parameter, holding that parameter's values for up to ``k`` instances, and returns
(or yields) one result per instance.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Sequence
from typing import Any, Callable

from mindserve._define.tracing import active_trace
from mindserve._errors import DefinitionError, is_int, refuse_async


def annotated_outputs(function: Callable[..., Any], batched: bool) -> int | None:
    """How many values a function's return annotation says it returns, if it says.

    ``-> tuple[A, B]`` is two outputs; for a batched stage, ``-> list[tuple[A, B]]`` (or an
    ``Iterator``/``Generator``/``Sequence`` of such tuples) is two outputs per instance.
    """
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable names in annotations: nothing to learn from them
        return None
    annotation = hints.get("return")
    if batched:
        args = typing.get_args(annotation)
        annotation = args[0] if args else None
    if typing.get_origin(annotation) is not tuple:
        return None
    items = typing.get_args(annotation)
    if not items or items[-1] is Ellipsis:
        return None
    return len(items)


def check_outputs(outputs: object, what: str) -> int:
    """Validate an ``outputs=N`` option (N >= 1)."""
    if not is_int(outputs, 1):
        raise DefinitionError(f"{what} outputs must be an int >= 1; got {outputs!r}")
    return outputs


class Stage:
    """A Python function registered as a stage of a servable (see :meth:`Servable.stage`).

    Calling it inside a method records a step; calling it anywhere else just runs the
    function.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        batch_size: int | None = None,
        outputs: int | None = None,
    ) -> None:
        if not callable(function):
            raise DefinitionError(f"a stage must be a callable; got {function!r}")
        if batch_size is not None and not is_int(batch_size, 0):
            raise DefinitionError(
                f"stage batch_size must be None (one instance per call), 0 (all instances at "
                f"once) or a positive int; got {batch_size!r}"
            )
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", type(function).__name__))
        refuse_async(function, f"stage '{self.name}'")
        self.batch_size = batch_size
        if outputs is None:
            outputs = annotated_outputs(function, batch_size is not None) or 1
        self.outputs = check_outputs(outputs, f"stage '{self.name}'")
        try:
            self.signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            self.signature = None
        functools.update_wrapper(self, function)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        batch = "" if self.batch_size is None else f", batch_size={self.batch_size}"
        return f"<Stage {self.name!r}{batch}, outputs={self.outputs}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trace = active_trace()
        if trace is None:
            return self.function(*args, **kwargs)
        return trace.record(self, "stage", self._positional(args, kwargs), self.outputs)

    def _positional(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sequence[Any]:
        if self.signature is None:
            if kwargs:
                raise DefinitionError(
                    f"stage '{self.name}' has no inspectable signature; pass its arguments by position"
                )
            return args
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise DefinitionError(
                f"stage '{self.name}{self.signature}' cannot be called with {len(args)} "
                f"positional and {len(kwargs)} keyword arguments: {exc}"
            ) from None
        if bound.kwargs:
            raise DefinitionError(
                f"stage '{self.name}' receives keyword-only arguments {sorted(bound.kwargs)}; "
                f"inside a method, pass stage arguments by position"
            )
        return bound.args

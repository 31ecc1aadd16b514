"""Python stages: ordinary functions that a method calls before, between or after models.

A stage with ``batch_size=None`` is called once per instance with that instance's
values. A stage with ``batch_size=k`` (``0`` for "all at once") is called with one list
per parameter, holding that parameter's values for up to ``k`` instances, and returns
(or yields) one result per instance.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import typing
from collections.abc import Sequence
from typing import Any, Callable

import attrs

from mindserve._errors import DefinitionError, StageError
from mindserve._outcome import Failure, Outcome, in_caller_thread
from mindserve._tracing import active_trace

logger = logging.getLogger("mindserve")


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
    if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
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
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0
        ):
            raise DefinitionError(
                f"stage batch_size must be None (one instance per call), 0 (all instances at "
                f"once) or a positive int; got {batch_size!r}"
            )
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", type(function).__name__))
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

    # -- running -------------------------------------------------------------------

    def run(self, instances: Sequence[tuple[Any, ...]]) -> list[Outcome]:
        """Run over the argument tuples of several instances; one outcome per instance.

        A batch that fails as a whole (the function raised, or returned the wrong number of
        results) is run again one instance at a time, so that only the instances that
        fail alone fail.
        """
        if self.batch_size is None:
            return [self._run_one(args) for args in instances]
        size = self.batch_size or len(instances)
        outcomes: list[Outcome] = []
        for start in range(0, len(instances), size):
            outcomes += self._run_isolating(instances[start : start + size])
        return outcomes

    def _run_one(self, args: tuple[Any, ...]) -> Outcome:
        try:
            result = self.function(*args)
        except BaseException as exc:
            if in_caller_thread(exc):
                raise
            return self._raised(exc)
        return self._split(result)

    def _run_isolating(self, instances: Sequence[tuple[Any, ...]]) -> list[Outcome]:
        outcomes = self._run_batch(instances)
        if not isinstance(outcomes, Failure):
            return outcomes
        if len(instances) == 1:
            return [outcomes]
        alone = [self._run_batch([args]) for args in instances]
        results = [_pinned(r, outcomes, len(instances)) if isinstance(r, Failure) else r[0] for r in alone]
        if not any(isinstance(r, Failure) for r in alone):
            logger.warning(
                "batched stage '%s' failed on a batch of %d (%s) but on none of its instances run "
                "alone; each instance got the result of its run alone",
                self.name,
                len(instances),
                outcomes.detail,
            )
        return results

    def _run_batch(self, instances: Sequence[tuple[Any, ...]]) -> list[Outcome] | Failure:
        """One call of a batched stage: one outcome per instance, or the batch's failure."""
        n_args = len(instances[0]) if instances else 0
        columns = [[args[i] for args in instances] for i in range(n_args)]
        try:
            returned = self.function(*columns)
            if isinstance(returned, (list, tuple)):
                results = list(returned)
            elif inspect.isgenerator(returned) or hasattr(returned, "__next__"):
                results = list(itertools.islice(returned, len(instances) + 1))
            else:
                return Failure(
                    StageError,
                    f"batched stage '{self.name}' (batch_size={self.batch_size}) must return or "
                    f"yield one result per instance; it returned {type(returned).__name__}",
                )
        except BaseException as exc:  # never an executor's death: batched stages run there
            return self._raised(exc)
        if len(results) != len(instances):
            got = len(results) if len(results) <= len(instances) else f"more than {len(instances)}"
            return Failure(
                StageError,
                f"batched stage '{self.name}' was given {len(instances)} instances and returned "
                f"{got} results; it must return one result per instance",
            )
        return [self._split(r) for r in results]

    def _raised(self, exc: BaseException) -> Failure:
        return Failure(StageError, f"stage '{self.name}' raised {type(exc).__name__}: {exc}", exc)

    def _split(self, result: Any) -> Outcome:
        if self.outputs == 1:
            if result is None:
                return Failure(StageError, f"stage '{self.name}' returned None")
            return (result,)
        if not isinstance(result, (tuple, list)) or len(result) != self.outputs:
            got = (
                f"{len(result)} values"
                if isinstance(result, (tuple, list))
                else f"a single {type(result).__name__}"
            )
            return Failure(
                StageError,
                f"stage '{self.name}' must return {self.outputs} values (outputs={self.outputs}); "
                f"it returned {got}",
            )
        if any(r is None for r in result):
            return Failure(StageError, f"stage '{self.name}' returned None among its outputs")
        return tuple(result)


def _pinned(alone: Failure, batch: Failure, size: int) -> Failure:
    """An instance's failure when run alone, saying how its batch failed when that differs."""
    if alone.detail == batch.detail:
        return alone
    return attrs.evolve(alone, detail=f"{alone.detail} (its batch of {size} failed first: {batch.detail})")

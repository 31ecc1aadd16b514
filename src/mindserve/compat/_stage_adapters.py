"""MindSpore Serving's stage functions as native stages: values handed over and returned as
MindSpore Serving does (:mod:`mindserve.compat._tensors`), batch functions' missing results,
and failures in MindSpore Serving's words (used by :mod:`mindserve.compat.register`)."""

from __future__ import annotations

import itertools
from typing import Any, Callable

import attrs

from mindserve._errors import StageError
from mindserve._outcomes import Failure
from mindserve._serving_wording import StageCallFailed
from mindserve.compat._tensors import stage_input, stage_outputs


def worded(call: Callable[..., Any], tag: str, method: str, index: int, batch: bool) -> Callable[..., Any]:
    """``call``, whose failures are worded as MindSpore Serving words them."""

    def failed(message: object) -> StageCallFailed:
        return StageCallFailed(
            f"Call {tag} Failed, method: '{method}', stage index(begin with 1): {index}, error msg: {message}"
        )

    def reported(*args: Any) -> Any:
        try:
            returned = call(*args)
        except Exception as exc:
            raise failed(exc) from exc
        if batch:  # the instances a batch function gave no result for fail
            return [
                Failure(StageError, str(failed(r.message)), failed(r.message))
                if isinstance(r, _Unanswered)
                else r
                for r in returned
            ]
        return returned

    reported.__name__ = getattr(call, "__name__", "stage")
    reported.__qualname__ = getattr(call, "__qualname__", reported.__name__)
    return reported


@attrs.frozen
class _Unanswered:
    """An instance a batch function returned no result for (its instance fails with
    ``message``; the instances it answered keep their results, as in MindSpore Serving)."""

    message: str


def batch_adapter(function: Callable[..., Any], outputs: int, method: str) -> Callable[..., Any]:
    """A MindSpore Serving batch function (a list of instance tuples) as a native batched
    stage (one list per input), with its values as MindSpore Serving hands them over.

    Results beyond the instances given are ignored; with fewer, the instances answered keep
    their results and the others fail (MindSpore Serving's semantics)."""
    name = getattr(function, "__name__", "batch_function")

    def adapted(*columns: list[Any]) -> Any:
        instances = [tuple(stage_input(v) for v in values) for values in zip(*columns)]
        returned = function(instances)
        results: list[Any] = [
            stage_outputs(r, outputs, name, method) for r in itertools.islice(iter(returned), len(instances))
        ]
        if len(results) < len(instances):
            missing = _Unanswered(
                f"The number {len(results)} of instances returned by function '{name}' is not equal to "
                f"the number {len(instances)} of instances provided to this function."
            )
            results += [missing] * (len(instances) - len(results))
        return results

    adapted.__name__ = name
    adapted.__qualname__ = getattr(function, "__qualname__", name)
    return adapted


def instance_adapter(function: Callable[..., Any], outputs: int, method: str) -> Callable[..., Any]:
    """A MindSpore Serving stage function run on one instance, with its values as
    MindSpore Serving hands them over (see :mod:`mindserve.compat._tensors`)."""
    name = getattr(function, "__name__", "function")

    def adapted(*args: Any) -> Any:
        return stage_outputs(function(*(stage_input(a) for a in args)), outputs, name, method)

    adapted.__name__ = name
    adapted.__qualname__ = getattr(function, "__qualname__", name)
    return adapted

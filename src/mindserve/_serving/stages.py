"""Running a Python stage over the instances of one step (per instance, or in batches).

A batch that fails as a whole (the function raised, or returned the wrong number of
results) runs again one instance at a time, so that only the instances that fail alone
fail. Whatever a stage raises becomes its instances' :class:`StageError`, except a
``KeyboardInterrupt`` in a caller's own thread, which reaches that caller.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import attrs

from mindserve._batching.alone import isolating
from mindserve._calls import Request, in_caller_thread
from mindserve._context import RunningVersion, running
from mindserve._define.servable import ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import InvalidInputError, StageError, counted, describe
from mindserve._observe.visible import warn_event
from mindserve._outcomes import Failure, Outcome

logger = logging.getLogger("mindserve")


def batched_stages(definition: ServableDefinition) -> list[Stage]:
    """The batched stages of a version's methods, each once, in the order they come."""
    stages: dict[Stage, None] = {}
    for method in definition.methods.values():
        for step in method.steps:
            if isinstance(step.callee, Stage) and step.callee.batch_size is not None:
                stages[step.callee] = None
    return list(stages)


def run_stage_in(
    version: RunningVersion,
    stage: Stage,
    instances: Sequence[tuple[Any, ...]],
    request: Request,
    requests: Sequence[Request] = (),
) -> list[Outcome]:
    """Run a stage over instances of ``request`` (``requests``: each instance's, when known),
    with ``version`` and that request as the ones ``Model.call`` inside it uses."""
    with running(version, request):
        return run_stage(stage, instances, requests)


def run_stage(
    stage: Stage, instances: Sequence[tuple[Any, ...]], requests: Sequence[Request] = ()
) -> list[Outcome]:
    """Run over the argument tuples of several instances; one outcome per instance.

    A batch that fails as a whole (the function raised, or returned the wrong number of
    results) is run again one instance at a time, so that only the instances that
    fail alone fail; those of calls that gave up meanwhile (``requests``, one per
    instance, when known) are dropped instead.
    """
    if stage.batch_size is None:
        return [_run_one(stage, args) for args in instances]
    size = stage.batch_size or len(instances)
    outcomes: list[Outcome] = []
    for start in range(0, len(instances), size):
        outcomes += _run_isolating(stage, instances[start : start + size], requests[start : start + size])
    return outcomes


def _run_one(stage: Stage, args: tuple[Any, ...]) -> Outcome:
    try:
        result = stage.function(*args)
    except BaseException as exc:
        if in_caller_thread(exc):
            raise
        return _raised(stage, exc)
    return _split(stage, result)


def _run_isolating(
    stage: Stage, instances: Sequence[tuple[Any, ...]], requests: Sequence[Request]
) -> list[Outcome]:
    batch = list(instances)
    outcomes = _run_batch(stage, batch)
    failed: list[Failure] = []

    def pinned(alone: Failure, whole: Failure) -> Failure:
        failed.append(alone)
        return _pinned(alone, whole, len(batch))

    results = isolating(functools.partial(_run_batch, stage), batch, requests, outcomes, pinned)
    if isinstance(outcomes, Failure) and len(batch) > 1 and not failed:
        warn_event(
            logger,
            logging.WARNING,
            "batched stage '%s' failed on a batch of %d (%s) but on none of its instances run "
            "alone; each instance got the result of its run alone",
            stage.name,
            len(batch),
            outcomes.detail,
        )
    return results


def _run_batch(
    stage: Stage, instances: Sequence[tuple[Any, ...]], requests: Sequence[Request] = ()
) -> list[Outcome] | Failure:
    """One call of a batched stage: one outcome per instance, or the batch's failure."""
    n_args = len(instances[0]) if instances else 0
    columns = [[args[i] for args in instances] for i in range(n_args)]
    try:
        returned = stage.function(*columns)
        if isinstance(returned, (list, tuple)):
            results = list(returned)
        elif inspect.isgenerator(returned) or hasattr(returned, "__next__"):
            results = list(itertools.islice(returned, len(instances) + 1))
        else:
            return Failure(
                StageError,
                f"batched stage '{stage.name}' (batch_size={stage.batch_size}) must return or "
                f"yield one result per instance; it returned {type(returned).__name__}",
            )
    except BaseException as exc:  # never an executor's death: batched stages run there
        return _raised(stage, exc)
    if len(results) != len(instances):
        got = len(results) if len(results) <= len(instances) else f"more than {len(instances)}"
        return Failure(
            StageError,
            f"batched stage '{stage.name}' was given {counted(len(instances), 'instance')} and returned "
            f"{got} results; it must return one result per instance",
        )
    return [_split(stage, r) for r in results]


def _raised(stage: Stage, exc: BaseException) -> Failure:
    if isinstance(exc, InvalidInputError) and not getattr(exc, "_from_model_call", False):
        # the stage found the client's value bad (not a Model.call it made wrongly)
        return Failure(InvalidInputError, f"stage '{stage.name}': {exc}", exc)
    return Failure(StageError, f"stage '{stage.name}' raised {describe(exc)}", exc)


def _split(stage: Stage, result: Any) -> Outcome:
    if isinstance(result, Failure):  # one instance's failure, as mindserve.compat passes it
        return result
    if stage.outputs == 1:
        if result is None:
            return Failure(StageError, f"stage '{stage.name}' returned None")
        return (result,)
    if not isinstance(result, (tuple, list)) or len(result) != stage.outputs:
        got = (
            counted(len(result), "value")
            if isinstance(result, (tuple, list))
            else f"a single {type(result).__name__}"
        )
        return Failure(
            StageError,
            f"stage '{stage.name}' must return {stage.outputs} values (outputs={stage.outputs}); "
            f"it returned {got}",
        )
    if any(r is None for r in result):
        return Failure(StageError, f"stage '{stage.name}' returned None among its outputs")
    return tuple(result)


def _pinned(alone: Failure, batch: Failure, size: int) -> Failure:
    """An instance's failure when run alone, saying how its batch failed when that differs."""
    if alone.detail == batch.detail:
        return alone
    return attrs.evolve(alone, detail=f"{alone.detail} (its batch of {size} failed first: {batch.detail})")

"""A model ready to run instances: its plan (warmed up), its executor, and the checks of
each instance's inputs.

A version's model in this process queues behind a scheduler
(:class:`~mindserve._serving.model_queue.LoadedModel`, a :class:`ReadyModel` with a queue). A
worker process hosts its models with no queue (its main process batches across calls):
:meth:`ReadyModel.run` runs a stage's ``Model.call`` there in this thread, in batches of that
call's own instances. Either way a batch that fails is retried one instance at a time, so
that one bad instance fails alone and the others still get their results.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Callable, TypeVar

import numpy as np

from mindserve._batching import shapes as _batching
from mindserve._batching.alone import isolating
from mindserve._calls import Request, in_caller_thread
from mindserve._define.model import Model
from mindserve._errors import InvalidInputError, MindServeError, counted
from mindserve._execution.executor import Executor, run_batch
from mindserve._execution.plan import ModelPlan
from mindserve._execution.probe import probe, tell
from mindserve._observe.visible import warn_definition
from mindserve._outcomes import Failure, Outcome
from mindserve._serving.served import ServedDefinition
from mindserve._values import serving_input_error, to_model_input

logger = logging.getLogger("mindserve")

#: Checked instances, ready to batch: their arrays, their batch keys (``None``: one group),
#: and what puts back the instances that failed their checks (``None``: none did).
Checked = tuple[
    Sequence[tuple[np.ndarray, ...]],
    Sequence[Any] | None,
    Callable[[list[Outcome]], list[Outcome]] | None,
]


class ReadyModel:
    """A model of a servable version, ready to run instances: its plan (warmed up) and its
    executor (``backend``)."""

    def __init__(self, model: Model, plan: ModelPlan, backend: Executor) -> None:
        self.model = model
        self.plan = plan
        self.name = model.name
        self.backend = backend
        self.where = plan.where
        self._what = f"model '{model.name}'"
        self.n_inputs = plan.n_inputs
        self.unbatched = plan.unbatched
        self.instance_specs = plan.instance_specs
        self.fixed_batch_size = plan.fixed_batch_size
        self.batching = plan.batching
        self.warmed_up = plan.warmed_up
        #: How variable-length inputs are padded (``None``: each shape batches on its own).
        self.lengths = plan.lengths
        #: Held while :meth:`run` runs batches: never more than one at once (a capacity of 1).
        self._running = threading.Lock()

    def warn_unbatched(self) -> None:
        """Warn that a model exported with a fixed batch size of 1 never batches across
        callers: said by its queue (:class:`~mindserve._serving.model_queue.LoadedModel`),
        once, in the process that batches; a worker process's model has no queue and says
        nothing."""
        if self.fixed_batch_size == 1:
            warn_definition(
                logger,
                "%s: model '%s' was exported with a fixed batch size of 1, so it will never batch "
                "instances across callers. Hint: export it with a dynamic batch dimension, "
                "mindspore.Tensor(shape=[None, ...]), to batch.",
                self.where,
                self.name,
            )

    def close(self) -> None:
        """Release the executor."""
        self.backend.close()

    def run(
        self, instances: Sequence[tuple[Any, ...]], labels: Sequence[str] | None, request: Request
    ) -> list[Outcome]:
        """Check and run instances in this thread, in batches of these instances alone (as
        a lone caller's run on a scheduler), one call's batches at a time."""
        values, keys, finish = self.checked(instances, labels)
        outcomes: list[Outcome] = [None] * len(values)  # type: ignore[list-item]  # all set below
        if values:
            request.check(self._what)
            limit = self.batching.max_batch_size or 1
            batches = [[0]] if len(values) == 1 else _batching.split(keys, len(values), limit)
            with self._running:
                for indices in batches:
                    ran = self._run_isolating([values[i] for i in indices], [request] * len(indices))
                    for i, outcome in zip(indices, ran):
                        outcomes[i] = outcome
        return outcomes if finish is None else finish(outcomes)

    def checked(self, instances: Sequence[tuple[Any, ...]], labels: Sequence[str] | None) -> Checked:
        """Check and convert instances; see :data:`Checked`."""
        alike = self._alike(instances, labels) if len(instances) > 1 else None
        if alike is not None:  # one check for many instances of one dtype and shape
            return alike, None if self.lengths is None else [self.lengths.key(alike[0])] * len(alike), None
        outcomes: list[Outcome | None] = [None] * len(instances)
        ready: list[int] = []
        arrays: list[tuple[np.ndarray, ...]] = []
        for index, values in enumerate(instances):
            converted = self._convert(values, labels)
            if isinstance(converted, Failure):
                outcomes[index] = converted
            else:
                ready.append(index)
                arrays.append(converted)
        keys = None
        if self.lengths is not None:  # a length bucket, not the length, keys a padded input
            keys = [self.lengths.key(a) for a in arrays]
        elif self.model.with_batch_dim:
            keys = [_batching.batch_key(a, self.unbatched) for a in arrays]
        if len(ready) == len(instances):  # nothing failed before queueing: outcomes as they come
            return arrays, keys, None
        return arrays, keys, functools.partial(_merge, outcomes, ready)

    def _alike(
        self, instances: Sequence[tuple[Any, ...]], labels: Sequence[str] | None
    ) -> Sequence[tuple[np.ndarray, ...]] | None:
        """The instances as they are, if the first passes every check unchanged and every
        other has numpy arrays of the same dtypes and shapes (so all share one batch key);
        else ``None``, and each instance is checked on its own."""
        if len(instances) < 2 or not self.model.with_batch_dim or self.unbatched:
            return None
        first = self._convert(instances[0], labels)
        if isinstance(first, Failure) or any(a is not v for a, v in zip(first, instances[0])):
            return None
        signature = [(a.dtype, a.shape) for a in first]
        ndarray = np.ndarray
        if len(signature) == 1:  # the common case, in one tight loop
            ((dtype, shape),) = signature
            for values in instances:
                if len(values) != 1:
                    return None
                value = values[0]
                if type(value) is not ndarray or value.shape != shape:
                    return None
                if value.dtype is not dtype and value.dtype != dtype:
                    return None
            return instances
        for values in instances:
            if len(values) != len(signature):
                return None
            for value, (dtype, shape) in zip(values, signature):
                if type(value) is not ndarray or value.shape != shape or value.dtype != dtype:
                    return None
        return instances

    def _convert(
        self, values: tuple[Any, ...], labels: Sequence[str] | None
    ) -> tuple[np.ndarray, ...] | Failure:
        if self.n_inputs is not None and len(values) != self.n_inputs:
            detail = f"model '{self.name}' takes {counted(self.n_inputs, 'input')}; got {len(values)}"
            if self.model.reshape_inputs and len(values) < self.n_inputs:  # compat: MindSpore Serving's words
                detail = f"Given model inputs size {len(values)} less than model inputs size {self.n_inputs}. {detail}"
            return Failure(InvalidInputError, detail)
        converted: list[np.ndarray] = []
        for position, value in enumerate(values):
            spec = self.instance_specs[position] if self.instance_specs else None
            array, problem = to_model_input(value, spec, self.model.reshape_inputs)
            if problem is not None:
                source = f" ({labels[position]})" if labels else ""
                detail = f"model '{self.name}' input {position}{source}: {problem}"
                if self.model.reshape_inputs:  # mindserve.compat: MindSpore Serving's words first
                    detail = f"{serving_input_error(position, value, spec)}. {detail}"
                return Failure(InvalidInputError, detail)
            assert array is not None
            converted.append(array)
        return tuple(converted)

    def _run_isolating(
        self, batch: list[tuple[np.ndarray, ...]], requests: Sequence[Request] = ()
    ) -> list[Outcome]:
        results = self._run_batch(batch, requests)
        if isinstance(results, Failure) and isinstance(results.cause, KeyboardInterrupt):
            if in_caller_thread(results.cause):  # the caller's own thread: stop here
                raise results.cause
        return isolating(self._run_batch, batch, requests, results)

    def _run_batch(
        self, batch: list[tuple[np.ndarray, ...]], requests: Sequence[Request] = ()
    ) -> list[Outcome] | Failure:
        return run_batch(self.plan, self.backend, batch, requests)


class PaddedReadyModel(ReadyModel):
    """A ready model whose variable-length inputs are padded (:class:`~mindserve.Padding`):
    each instance's lengths are checked against the longest accepted too (a subclass, so
    that other models check nothing more per instance)."""

    def _convert(
        self, values: tuple[Any, ...], labels: Sequence[str] | None
    ) -> tuple[np.ndarray, ...] | Failure:
        converted = super()._convert(values, labels)
        if not isinstance(converted, Failure):
            assert self.lengths is not None
            problem = self.lengths.check(converted)
            if problem is not None:
                return Failure(InvalidInputError, f"model '{self.name}' {problem}")
        return converted


def ready(model: Model, plan: ModelPlan, executor: Executor) -> ReadyModel:
    """A model ready on ``plan`` (with no queue): padded or not."""
    return (ReadyModel if plan.lengths is None else PaddedReadyModel)(model, plan, executor)


def plan_model(
    model: Model, executor: Executor, where: str, warm_up: bool, *, tells: bool = True
) -> tuple[ModelPlan, tuple[tuple[int, float], ...]]:
    """A model's plan on its executor, probed and warmed up (if ``warm_up``), and the batch
    sizes compiled with their seconds. ``tells``: say what the padding probe found (a worker
    process does not: its plan travels to the main process, which says it once)."""
    plan = probe(
        ModelPlan.of(model, executor.input_specs, where), executor, declared=model.padding is not None
    )
    if tells:
        tell(plan)
    if not warm_up:
        return plan, ()
    result = executor.warm_up(plan)
    return plan.warmed(result), result.compiled


M = TypeVar("M", bound=ReadyModel)


def model_of(
    models: Mapping[str, M], model: Model, where: str, served: ServedDefinition, *, copied: bool = False
) -> M:
    """The running version's model that ``model`` is (``where``: the version, to name it;
    ``served``: its definition as served).

    It is the same object, or the model a test replaced by it; with ``copied`` (a worker
    process), also the copy a stage's module made when it was imported there (same name and
    kind). :class:`MindServeError` for any other model.
    """
    running = models.get(model.name)
    if running is not None:
        if running.model is model:
            return running
        declared = served.declared(running.model)
        if declared is model or (copied and declared.name == model.name and declared.kind == model.kind):
            return running
    raise MindServeError(f"model '{model.name}' is not a model of {where}")


def _merge(outcomes: list[Outcome | None], ready: list[int], results: list[Outcome]) -> list[Outcome]:
    """Put the queued instances' results among the instances that failed before queueing."""
    for position, result in zip(ready, results):
        outcomes[position] = result
    return outcomes  # type: ignore[return-value]

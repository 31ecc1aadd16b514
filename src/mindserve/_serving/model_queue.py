"""A loaded model: checks each instance's inputs, batches them, runs, slices the outputs.

Each model has a :class:`~mindserve._batching.scheduler.Scheduler`: instances from every caller
join one queue and run in batches, one batch at a time (MindSpore networks also hold
MindSpore's process lock), so any number of threads may call :meth:`LoadedModel.submit`.
Batches of a model that takes any batch size are padded up to a bucket, so MindSpore
compiles few shapes. A batch that fails is retried one instance at a time, so that one
bad instance fails alone and the others still get their results.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from mindserve._batching import shapes as _batching
from mindserve._batching.alone import isolating
from mindserve._batching.scheduler import Scheduler
from mindserve._calls import Pending, Request, in_caller_thread
from mindserve._define.model import Model
from mindserve._errors import InvalidInputError, counted
from mindserve._execution.executor import Executor, run_batch
from mindserve._execution.plan import ModelPlan
from mindserve._execution.probe import probe
from mindserve._observe.observer import ObserverHub, Step
from mindserve._observe.visible import warn_definition
from mindserve._outcomes import Failure, Outcome
from mindserve._values import serving_input_error, to_model_input

logger = logging.getLogger("mindserve")


class LoadedModel:
    """A model of a running servable version, ready to run instances: its plan (warmed up)
    and its executor, behind a queue."""

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
        if self.fixed_batch_size == 1:
            warn_definition(
                logger,
                "%s: model '%s' was exported with a fixed batch size of 1, so it will never batch "
                "instances across callers. Hint: export it with a dynamic batch dimension, "
                "mindspore.Tensor(shape=[None, ...]), to batch.",
                self.where,
                self.name,
            )
        self.scheduler: Scheduler | None = None

    def start(
        self,
        observer: ObserverHub | None = None,
        step: Step | None = None,
        scheduler: type[Scheduler] = Scheduler,
    ) -> None:
        """Start the scheduler that batches this model's instances across callers
        (``step`` names it in observers' reports)."""
        buckets = self.batching.buckets if self.model.with_batch_dim else None
        self.scheduler = scheduler(
            f"{self.where}: {self._what}",
            self._run_isolating,
            what=self._what,
            max_batch_size=self.batching.max_batch_size or 1,
            max_delay=self.batching.max_delay,
            refill_wait=self.batching.refill_wait,
            max_queue=self.batching.max_queue,
            capacity=self.backend.capacity,
            observer=observer,
            padded=functools.partial(_batching.bucket_for, buckets=buckets) if buckets else None,
            on_drained=self.backend.close,
            step=step,
            elements=None if self.lengths is None else self.lengths.elements,
        )

    def close(self) -> None:
        """Stop taking instances; the backend is released once the queue has drained."""
        if self.scheduler is not None:
            self.scheduler.close()
        else:
            self.backend.close()

    # -- running -------------------------------------------------------------------

    def submit(
        self,
        instances: Sequence[tuple[Any, ...]],
        labels: Sequence[str] | None,
        request: Request,
        inline: bool = True,
    ) -> Pending:
        """Check and queue instances; the pending step completes with one outcome each."""
        assert self.scheduler is not None, "LoadedModel.start() was not called"
        alike = self._alike(instances, labels) if len(instances) > 1 else None
        if alike is not None:  # one check for many instances of one dtype and shape
            same = None if self.lengths is None else [self.lengths.key(alike[0])] * len(alike)
            return Pending(
                self.scheduler.submit(request, alike, same, inline and self.backend.inline), self._what
            )
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
        ticket = self.scheduler.submit(request, arrays, keys, inline and self.backend.inline)
        if len(ready) == len(instances):  # nothing failed before queueing: outcomes as they come
            return Pending(ticket, self._what)
        return Pending(ticket, self._what, functools.partial(_merge, outcomes, ready))

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


class PaddedModel(LoadedModel):
    """A loaded model whose variable-length inputs are padded (:class:`~mindserve.Padding`):
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


def loaded(model: Model, plan: ModelPlan, executor: Executor) -> LoadedModel:
    """The queue of a model on ``plan``: padded or not."""
    return (LoadedModel if plan.lengths is None else PaddedModel)(model, plan, executor)


def ready_model(
    model: Model, executor: Executor, where: str, warm_up: bool
) -> tuple[LoadedModel, tuple[tuple[int, float], ...]]:
    """A model's queue on its executor, planned and warmed up (if ``warm_up``), and the
    batch sizes compiled with their seconds."""
    plan = probe(
        ModelPlan.of(model, executor.input_specs, where), executor, declared=model.padding is not None
    )
    if not warm_up:
        return loaded(model, plan, executor), ()
    result = executor.warm_up(plan)
    return loaded(model, plan.warmed(result), executor), result.compiled


def _merge(outcomes: list[Outcome | None], ready: list[int], results: list[Outcome]) -> list[Outcome]:
    """Put the queued instances' results among the instances that failed before queueing."""
    for position, result in zip(ready, results):
        outcomes[position] = result
    return outcomes  # type: ignore[return-value]

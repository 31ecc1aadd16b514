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
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from mindserve._batching import shapes as _batching
from mindserve._batching.scheduler import Scheduler
from mindserve._calls import Failure, Outcome, Pending, Request, dropped, in_caller_thread
from mindserve._config import Batching
from mindserve._define.model import Model
from mindserve._errors import InvalidInputError, LoadError, ModelError, counted, describe
from mindserve._execution.local import Backend
from mindserve._observe.observer import ObserverHub, Step
from mindserve._values import TensorSpec, serving_input_error, to_model_input

logger = logging.getLogger("mindserve")

#: Seconds the warm-up pauses between two compiles, for serving versions to take MindSpore.
_PAUSE_BETWEEN_COMPILES = 0.01

#: Largest batch fed to a model that accepts any batch size.
DEFAULT_MAX_BATCH_SIZE = 64


class LoadedModel:
    """A model of a running servable version, ready to run instances."""

    def __init__(self, model: Model, backend: Backend, where: str) -> None:
        self.model = model
        self.name = model.name
        self.backend = backend
        self.where = where
        self._what = f"model '{model.name}'"
        specs = backend.input_specs
        self.n_inputs = len(specs) if specs is not None else model.inputs
        self._check_signature()
        self.unbatched = set(model.without_batch_dim_inputs)
        #: Per-instance spec of each input (the batch dimension dropped), or None.
        self.instance_specs: tuple[TensorSpec | None, ...] | None = None
        #: The batch size the model was exported with, or None if it takes any.
        self.fixed_batch_size: int | None = None
        if specs is not None:
            self.instance_specs = tuple(
                s if (not model.with_batch_dim or i in self.unbatched) else s.drop_batch_dim()
                for i, s in enumerate(specs)
            )
            if model.with_batch_dim:
                batched = [s for i, s in enumerate(specs) if i not in self.unbatched]
                if batched and batched[0].shape[0] is not None:
                    self.fixed_batch_size = batched[0].shape[0]
        #: The effective batching options (buckets may be pruned at warm-up, if asked).
        self.batching = self._resolve_batching()
        if self.fixed_batch_size == 1:
            logger.warning(
                "%s: model '%s' was exported with a fixed batch size of 1, so it will never batch "
                "instances across callers. Hint: export it with a dynamic batch dimension, "
                "mindspore.Tensor(shape=[None, ...]), to batch.",
                where,
                self.name,
            )
        #: The batch sizes the warm-up ran (each compiled once at load).
        self.warmed_up: tuple[int, ...] = ()
        self.scheduler: Scheduler | None = None

    def _check_signature(self) -> None:
        model, specs = self.model, self.backend.input_specs
        if specs is not None and model.inputs is not None and len(specs) != model.inputs:
            raise LoadError(
                f"{self._serving_count('inputs', model.inputs, len(specs))}{self.where}: model '{model.name}' "
                f"takes {counted(len(specs), 'input')}, but a method calls it with {model.inputs}"
            )
        if model.with_batch_dim and specs is not None:
            bad = [i for i in model.without_batch_dim_inputs if i >= len(specs)]
            if bad:
                raise LoadError(
                    f"{self.where}: model '{model.name}' has {len(specs)} inputs; "
                    f"without_batch_dim_inputs names {bad}"
                )
            if any(len(s.shape) == 0 for i, s in enumerate(specs) if i not in model.without_batch_dim_inputs):
                raise LoadError(
                    f"{self.where}: model '{model.name}' has a scalar input, which has no batch "
                    f"dimension. Hint: declare it with with_batch_dim=False or list the input "
                    f"in without_batch_dim_inputs."
                )

    def _serving_count(self, what: str, registered: int, actual: int) -> str:
        """For mindserve.compat, MindSpore Serving's words for a count that differs from the
        model's (a prefix; empty for native servables)."""
        if not self.model.reshape_inputs:
            return ""
        key, _, subgraph = self.name.rpartition("#") if "#" in self.name else (self.name, "", "0")
        return (
            f"The {what} count {registered} in register_method not equal to the count {actual} defined in "
            f"model, model info: {key}, subgraph: {subgraph}. "
        )

    def _resolve_batching(self) -> Batching:
        """The effective batching: explicit options, else defaults from the batch dimension."""
        config = self.model.batching or Batching()
        if not self.model.with_batch_dim:
            return attrs.evolve(config, max_batch_size=1, buckets=None)
        fixed = self.fixed_batch_size
        if fixed is not None:
            if config.max_batch_size not in (None, fixed) or config.buckets not in (None, (fixed,)):
                raise LoadError(
                    f"{self.where}: model '{self.name}' was exported with batch size {fixed}, so it "
                    f"always runs batches of {fixed}; got {config!r}. Hint: export it with a dynamic "
                    f"batch dimension (Tensor(shape=[None, ...])) to choose batch sizes."
                )
            return attrs.evolve(config, max_batch_size=fixed, buckets=(fixed,))
        buckets = config.buckets
        largest = config.max_batch_size or (buckets[-1] if buckets else DEFAULT_MAX_BATCH_SIZE)
        if buckets is not None and buckets[-1] < largest:
            raise LoadError(
                f"{self.where}: model '{self.name}': the largest bucket {buckets[-1]} is smaller "
                f"than max_batch_size={largest}"
            )
        if buckets is None and self.model.kind != "callable":
            buckets = _batching.power_of_two_buckets(largest)
        return attrs.evolve(config, max_batch_size=largest, buckets=buckets)

    def warm_up(self, enabled: bool = True) -> tuple[tuple[int, float], ...]:
        """Compile every bucket once on zeros (when all input shapes are known) and check outputs.

        Returns each batch size run with its seconds. Each bucket runs once, so the same
        model and options always get the same buckets. ``Batching(prune_buckets=True)``
        also times each bucket and keeps only those faster than every larger one.
        ``Batching(warm_up=False)`` runs one batch of 1, to check the outputs; ``enabled``
        False (the runtime's switch) runs nothing.
        """
        specs = self.instance_specs
        if (
            not enabled
            or specs is None
            or any(s is None or s.dtype is None or None in s.shape for s in specs)
        ):
            return ()
        instance = tuple(np.zeros(s.shape, s.dtype) for s in specs)  # type: ignore[arg-type,union-attr]
        sizes = self.batching.buckets if self.batching.warm_up and self.batching.buckets else (1,)
        prune = self.batching.prune_buckets and self.fixed_batch_size is None and len(sizes) > 1
        compiled: list[tuple[int, float]] = []
        seconds = {}
        for position, size in enumerate(sizes, start=1):
            started = time.perf_counter()
            outcome = self._run_batch([instance] * size)
            took = time.perf_counter() - started
            if isinstance(outcome, Failure):
                raise LoadError(f"{self.where}: model '{self.name}' failed its warm-up run: {outcome.detail}")
            compiled.append((size, took))
            logger.info(
                "%s: model '%s' warmed up batch size %d in %.2f s (%d of %d)",
                self.where,
                self.name,
                size,
                took,
                position,
                len(sizes),
            )
            if prune:  # only pruning needs the timings
                seconds[size] = _median_seconds(functools.partial(self._run_batch, [instance] * size))
            # MindSpore's lock is not fair: without a pause, the next compile takes it again
            # at once, and versions serving beside this load (a hot update) starve.
            if position < len(sizes):
                time.sleep(_PAUSE_BETWEEN_COMPILES)
        if prune:
            self.batching = attrs.evolve(self.batching, buckets=_batching.prune_buckets(seconds))
        self.warmed_up = tuple(sizes)
        logger.info(
            "%s: model '%s' warmed up %d batch sizes in %.2f s",
            self.where,
            self.name,
            len(sizes),
            sum(t for _, t in compiled),
        )
        return tuple(compiled)

    def adopt(self, buckets: tuple[int, ...] | None, warmed_up: tuple[int, ...]) -> None:
        """Take the buckets and warmed-up sizes of the same model loaded in a worker process
        (which ran the warm-up, and pruned the buckets if asked)."""
        self.batching = attrs.evolve(self.batching, buckets=buckets)
        self.warmed_up = tuple(warmed_up)

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
            return Pending(
                self.scheduler.submit(request, alike, None, inline and self.backend.inline), self._what
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
        if self.model.with_batch_dim:
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
        if isinstance(results, Failure) and len(batch) > 1:
            alone: Sequence[Request | None] = requests or [None] * len(batch)
            now = time.monotonic()
            return [  # instances of calls that gave up meanwhile are not run again
                dropped(request)
                if request is not None and request.expired(now)
                else self._run_one(arrays, request)
                for arrays, request in zip(batch, alone)
            ]
        if isinstance(results, Failure):
            return [results]
        return results

    def _run_one(self, arrays: tuple[np.ndarray, ...], request: Request | None) -> Outcome:
        results = self._run_batch([arrays], () if request is None else (request,))
        return results if isinstance(results, Failure) else results[0]

    def _run_batch(
        self, batch: list[tuple[np.ndarray, ...]], requests: Sequence[Request] = ()
    ) -> list[Outcome] | Failure:
        with_batch_dim = self.model.with_batch_dim
        try:
            if with_batch_dim:
                buckets = self.batching.buckets
                pad_to = _batching.bucket_for(len(batch), buckets) if buckets else None
                inputs = _batching.stack(batch, self.unbatched, pad_to)
            else:
                inputs = batch[0]
            outputs = self.backend.run(inputs, requests)
        except BaseException as exc:  # a callable model may raise anything; nothing escapes
            return Failure(ModelError, f"model '{self.name}' failed: {describe(exc, first_line=True)}", exc)
        if self.model.outputs is not None and len(outputs) != self.model.outputs:
            return Failure(
                ModelError,
                f"{self._serving_count('outputs', self.model.outputs, len(outputs))}model '{self.name}' "
                f"returned {counted(len(outputs), 'output')}; it is declared with outputs={self.model.outputs}",
            )
        if not with_batch_dim:
            return [tuple(np.asarray(o) for o in outputs)]
        sliced = _batching.unstack(outputs, pad_to or len(batch), len(batch))
        if isinstance(sliced, str):
            return Failure(ModelError, f"model '{self.name}': {sliced}")
        return sliced  # type: ignore[return-value]


def _median_seconds(run: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _merge(outcomes: list[Outcome | None], ready: list[int], results: list[Outcome]) -> list[Outcome]:
    """Put the queued instances' results among the instances that failed before queueing."""
    for position, result in zip(ready, results):
        outcomes[position] = result
    return outcomes  # type: ignore[return-value]

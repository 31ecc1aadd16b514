"""A servable version placed in worker processes: :class:`WorkerPlacement` starts them,
gives each model's queue (in the main process) the executor it runs its batches on
(:class:`WorkerBackend`), and sends the batches of batched stages to them."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from mindserve._batching.alone import isolating
from mindserve._calls import Request
from mindserve._config import WorkerPlan
from mindserve._define.model import Model
from mindserve._define.servable import ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import StageError, describe
from mindserve._execution.plan import ModelPlan, WarmUp
from mindserve._observe.observer import WarmUpReport
from mindserve._observe.status import WorkerInfo
from mindserve._outcomes import Failure, Outcome
from mindserve._serving.model_queue import LoadedModel, ready_model
from mindserve._serving.placement import StageBatch, StageRunner
from mindserve._values import TensorSpec
from mindserve._workers.pool import WorkerPool
from mindserve._workers.protocol import Ready, RunModel, RunStage


class WorkerBackend:
    """A model of a servable version running in worker processes: the model's queue
    (in this process) sends each batch to an idle worker; up to one batch per worker runs
    at once."""

    #: Callers never run a batch in their own thread: they wait for it with their timeout,
    #: which then holds even while a worker is slow, restarting or hung.
    inline = False
    reads_only = True  # a batch is copied to the worker process

    def __init__(
        self,
        pool: WorkerPool,
        model: str,
        input_specs: tuple[TensorSpec, ...] | None,
        *,
        lend: bool,
        warmed: WarmUp | None = None,
        shapes: frozenset[tuple[tuple[int, ...], ...]] | None = None,
    ) -> None:
        self.pool = pool
        self.model = model
        self.input_specs = input_specs
        self.capacity = pool.size
        self._lend = lend
        self._warmed = warmed
        #: For a MindSpore model: the input shapes run, the workers' load's and every batch's
        #: sent since (each worker compiles a graph for each shape it runs).
        self._shapes = None if shapes is None else set(shapes)
        pool.retain()

    @property
    def graphs(self) -> int | None:
        """How many distinct graphs the workers compiled (a shape counts once, though each
        worker that runs it compiles it); ``None`` for a callable."""
        return None if self._shapes is None else len(self._shapes)

    def warm_up(self, plan: ModelPlan) -> WarmUp:
        """What the workers' warm-up did (each worker warms up as it loads the version)."""
        return WarmUp((), plan.batching.buckets) if self._warmed is None else self._warmed

    def run(self, arrays: tuple[np.ndarray, ...], requests: Sequence[Request] = ()) -> tuple[np.ndarray, ...]:
        if self._shapes is not None:
            self._shapes.add(tuple([a.shape for a in arrays]))
        return self.pool.call(RunModel(self.model, arrays), requests, lend=self._lend)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.pool.release()


class WorkerPlacement:
    """A version's models and batched stages run in worker processes, as ``plan`` says;
    their queues stay in this process, in front of them."""

    remote = True

    def __init__(self, plan: WorkerPlan, device_target: str | None) -> None:
        self.plan = plan
        self.device_target = device_target
        self.pool: WorkerPool | None = None
        self._ready: Ready | None = None

    def open(
        self, definition: ServableDefinition, number: int, version_dir: str | None, where: str, warm_up: bool
    ) -> None:
        """Start the worker processes, each loading and warming up the version."""
        self.pool = WorkerPool(definition, number, self.plan, self.device_target, where, warm_up)
        self._ready = self.pool.start()

    def load_model(self, model: Model, where: str, warm_up: bool) -> tuple[LoadedModel, WarmUpReport | None]:
        assert self.pool is not None and self._ready is not None, "WorkerPlacement.open() was not called"
        loaded_there = self._ready.models[model.name]
        # A MindSpore network keeps nothing of its inputs: it may run on views of
        # shared memory. A Python callable might keep them: it gets copies.
        backend = WorkerBackend(
            self.pool,
            model.name,
            loaded_there.input_specs,
            lend=not model.origin.keeps_inputs,
            warmed=loaded_there.warm_up,
            shapes=loaded_there.shapes,
        )
        try:
            loaded, _ = ready_model(model, backend, where, warm_up)
        except BaseException:
            backend.close()
            raise
        return loaded, loaded_there.report

    def device(self) -> str | None:
        assert self._ready is not None
        return self._ready.device

    def stage_runner(self, stage: Stage, here: StageBatch) -> StageRunner:
        assert self.pool is not None
        self.pool.retain()
        return StageRunner(
            functools.partial(_run_stage_in_worker, self.pool, stage), self.pool.size, self.pool.release
        )

    def workers(self) -> tuple[WorkerInfo, ...]:
        return () if self.pool is None else self.pool.info()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.release()  # the workers stop once every queue has drained

    def discard(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def wait_closed(self, timeout: float | None) -> None:
        if self.pool is not None:
            self.pool.wait_closed(timeout)


def _run_stage_in_worker(
    pool: WorkerPool, stage: Stage, instances: list[tuple[Any, ...]], requests: list[Request]
) -> list[Outcome]:
    """Run a batched stage in a worker process. A batch that cannot be sent or whose
    worker died runs again one instance at a time, so that only the instances that
    fail alone fail."""
    run = functools.partial(_send_stage, pool, stage)
    return isolating(run, instances, requests, run(instances, requests))


def _send_stage(
    pool: WorkerPool, stage: Stage, instances: list[tuple[Any, ...]], requests: Sequence[Request]
) -> list[Outcome] | Failure:
    remaining = Request.covering(requests).remaining()
    timeout = None if remaining is None else max(remaining, 0.0)
    try:
        return pool.call(RunStage(stage.name, instances, timeout), requests)  # type: ignore[no-any-return]
    except BaseException as exc:  # never an executor's death
        return Failure(StageError, f"stage '{stage.name}' failed: {describe(exc)}", exc)

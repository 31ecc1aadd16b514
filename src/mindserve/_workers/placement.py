"""A servable version placed in worker processes: :class:`WorkerPlacement` starts them,
gives each model's queue (in the main process) the executor it runs its batches on
(:class:`WorkerBackend`), and sends the batches of batched stages to them.

Each model is planned once, where it runs: every worker plans it (the padding probe runs
there) and sends its plan in its :class:`~mindserve._workers.protocol.Ready`; the workers
must agree (:func:`agreed`), and the model's queue here runs with that plan, probing nothing
again."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from mindserve._batching.alone import isolating
from mindserve._calls import Request
from mindserve._config import WorkerPlan
from mindserve._define.model import Model
from mindserve._define.servable import ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import LoadError, StageError, describe
from mindserve._execution.plan import ModelPlan, WarmUp
from mindserve._execution.probe import tell
from mindserve._observe.observer import WarmUpReport
from mindserve._observe.status import WorkerInfo
from mindserve._outcomes import Failure, Outcome
from mindserve._serving.model_queue import LoadedModel, loaded
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
        shapes: frozenset[tuple[tuple[int, ...], ...]] | None = None,
    ) -> None:
        self.pool = pool
        self.model = model
        self.input_specs = input_specs
        self.capacity = pool.size
        self._lend = lend
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
        """What the workers' warm-up did (each worker warms up as it loads the version, and
        its plan, which the model's queue runs with, says so): nothing runs here."""
        return WarmUp((), plan.batching.buckets) if plan.warm is None else plan.warm

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
        """Start the worker processes, each loading, planning and warming up the version;
        :class:`LoadError` if they do not plan its models alike."""
        self.pool = WorkerPool(definition, number, self.plan, self.device_target, where, warm_up)
        try:
            self._ready = agreed(self.pool.start(), where)
        except BaseException:
            self.pool.close()
            raise

    def load_model(self, model: Model, where: str, warm_up: bool) -> tuple[LoadedModel, WarmUpReport | None]:
        """The model's queue, on the plan its workers made (probed and warmed up there):
        what the padding probe found is said here, once."""
        assert self.pool is not None and self._ready is not None, "WorkerPlacement.open() was not called"
        there = self._ready.models[model.name]
        plan: ModelPlan = there.plan
        tell(plan)
        # A MindSpore network keeps nothing of its inputs: it may run on views of
        # shared memory. A Python callable might keep them: it gets copies.
        backend = WorkerBackend(
            self.pool, model.name, plan.input_specs, lend=not model.origin.keeps_inputs, shapes=there.shapes
        )
        try:
            queue = loaded(model, plan, backend)
        except BaseException:
            backend.close()
            raise
        return queue, there.report

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


def agreed(readies: Sequence[Ready], where: str) -> Ready:
    """The first worker's :class:`Ready`, once every other worker planned each model alike;
    :class:`LoadError` naming the model and the workers otherwise.

    The workers run one definition on one kind of device, so only the padding probe can
    find differently (a model whose answers vary from process to process, or float rounding
    at the probe's tolerance). The version does not load then: serving with one worker's
    verdict would pad batches another found padding changes. The buckets a warm-up pruned
    by its timings (``Batching(prune_buckets=True)``) may differ: the first worker's are kept.
    """
    first = readies[0]
    for index, ready in enumerate(readies[1:], start=1):
        for name, ours in first.models.items():
            mine, theirs = _compared(ours.plan), _compared(ready.models[name].plan)
            if mine == theirs:
                continue
            if mine.lengths != theirs.lengths:
                raise LoadError(
                    f"{where}: model '{name}': the workers' load-time padding probes disagree: worker 0 "
                    f"{_padding(mine)}, worker {index} {_padding(theirs)}. Hint: declare "
                    f"padding=mindserve.Padding(...), or Padding(enabled=False) to keep exact shapes, so that "
                    f"no probe decides (see docs/batching.md)."
                )
            differ = [
                f.name for f in attrs.fields(ModelPlan) if getattr(mine, f.name) != getattr(theirs, f.name)
            ]
            raise LoadError(
                f"{where}: model '{name}': worker 0 and worker {index} planned it differently "
                f"({', '.join(differ)}); every worker must load the same definition"
            )
    return first


def _compared(plan: ModelPlan) -> ModelPlan:
    """What must be the same in every worker's plan: all but what its warm-up timed."""
    return attrs.evolve(plan, warm=None, batching=attrs.evolve(plan.batching, buckets=None))


def _padding(plan: ModelPlan) -> str:
    if plan.lengths is None:
        return "pads nothing (exact shapes)"
    axes = sorted(plan.lengths.axes)
    return f"pads input(s) {axes} to length buckets {list(plan.lengths.buckets)}"


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

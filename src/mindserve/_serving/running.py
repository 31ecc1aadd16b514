"""A running version of a servable: its definition snapshot and its loaded models."""

from __future__ import annotations

import datetime
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mindserve._batching.alone import isolating
from mindserve._batching.per_call import PerCallScheduler
from mindserve._batching.scheduler import UNLIMITED, Scheduler
from mindserve._calls import Failure, Outcome, Pending, Request, running
from mindserve._config import WorkerPlan
from mindserve._define.model import Model
from mindserve._define.servable import ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import InvalidArgumentError, LoadError, MindServeError, StageError, describe
from mindserve._execution import mindspore as _mindspore
from mindserve._execution.executor import Executor
from mindserve._execution.plan import ModelPlan
from mindserve._observe.observer import ObserverHub, Step, WarmUpReport
from mindserve._observe.status import MethodInfo, ModelInfo, ServableInfo
from mindserve._serving.model_queue import LoadedModel
from mindserve._serving.stages import run_stage
from mindserve._serving.versions import resolve_version
from mindserve._workers.placement import WorkerBackend
from mindserve._workers.pool import WorkerPool
from mindserve._workers.protocol import RunStage

#: True in a worker process (set by it before it loads its servable version).
in_worker_process = False

#: The environment variable that turns warm-up off for every runtime that does not say.
WARM_UP_VARIABLE = "MINDSERVE_WARM_UP"


def warm_up_from_environment() -> bool:
    """``MINDSERVE_WARM_UP``: ``0``/``false``/``no``/``off`` turn warm-up off; unset, on."""
    value = os.environ.get(WARM_UP_VARIABLE, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise InvalidArgumentError(
        f"{WARM_UP_VARIABLE} must be 1 or 0 (or true/false, yes/no, on/off); got {value!r}"
    )


class LoadedServable:
    """One version of a servable, loaded and ready to serve.

    It counts the requests running on it: once retired (stopped or replaced), it shuts its
    schedulers down when the last of them has finished. With worker processes (``pool``),
    its models and batched stages run there; its schedulers stay in this process.
    """

    def __init__(
        self,
        definition: ServableDefinition,
        version: int,
        version_dir: str | None,
        models: dict[str, LoadedModel],
        device: str | None,
        observer: ObserverHub | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        self.definition = definition
        self.pool = pool
        self.name = definition.name
        self.version = version
        self.version_dir = version_dir
        self.models = models
        self.device = device
        self.loaded_at = datetime.datetime.now(datetime.timezone.utc)
        where = f"servable '{self.name}' version {version}"
        self.stage_schedulers: dict[Stage, Scheduler] = {}
        for method in definition.methods.values():
            for step in method.steps:
                stage = step.callee
                if isinstance(stage, Stage) and stage.batch_size is not None:
                    if stage not in self.stage_schedulers:
                        self.stage_schedulers[stage] = self._stage_scheduler(where, stage, observer)
        self._state = threading.Lock()
        self._calls: set[Request] = set()
        self._retired = False
        self._shut = False
        #: Called once, after the last call finished on a retired version.
        self.on_shutdown: Callable[[LoadedServable], None] | None = None

    def __repr__(self) -> str:
        return f"<LoadedServable {self.name!r} version {self.version}>"

    def _stage_scheduler(self, where: str, stage: Stage, observer: ObserverHub | None) -> Scheduler:
        """The queue that batches a batched stage's instances across callers."""
        pool = self.pool
        if pool is not None:
            pool.retain()
        return scheduler_for(self.definition)(
            f"{where}: stage '{stage.name}'",
            functools.partial(self._run_stage_batch if pool is None else self._run_stage_in_worker, stage),
            what=f"stage '{stage.name}'",
            max_batch_size=stage.batch_size or UNLIMITED,
            capacity=1 if pool is None else pool.size,
            observer=observer,
            on_drained=None if pool is None else pool.release,
            step=Step(self.name, self.version, "stage", stage.name),
        )

    @classmethod
    def load(
        cls,
        definition: ServableDefinition,
        version: int,
        device: tuple[str | None, int],
        observer: ObserverHub | None = None,
        warm_up: bool = True,
        plan: WorkerPlan | None = None,
    ) -> LoadedServable:
        """Resolve the version, load and warm up every model (in this process, or in worker
        processes as ``plan`` says); raise :class:`LoadError` on failure."""
        if plan is not None:
            return cls._load_in_workers(definition, version, device[0], observer, warm_up, plan)
        number, version_dir = resolve_version(definition, version)
        where = f"servable '{definition.name}' version {number}"
        models: dict[str, LoadedModel] = {}
        used_mindspore = False
        try:
            for model in definition.models.values():
                started = time.perf_counter()
                try:
                    loaded, compiled = _ready(
                        model, model.origin.open(model.name, version_dir, device, where), where, warm_up
                    )
                except MindServeError:
                    raise
                except Exception as exc:  # a load never takes the runtime down
                    raise LoadError(f"{where}: model '{model.name}' failed to load: {describe(exc)}") from exc
                if observer is not None and observer.wants("on_warm_up"):
                    seconds = time.perf_counter() - started
                    observer.on_warm_up(WarmUpReport(definition.name, number, model.name, compiled, seconds))
                loaded.start(
                    observer, Step(definition.name, number, "model", model.name), scheduler_for(definition)
                )
                used_mindspore = used_mindspore or model.origin.uses_mindspore
                models[model.name] = loaded
        except BaseException:
            for loaded in models.values():
                loaded.close()
            raise
        chosen = _mindspore.use_device(*device) if used_mindspore else None
        device_name = f"{chosen[0]}:{chosen[1]}" if chosen else None
        return cls(definition, number, version_dir, models, device_name, observer)

    @classmethod
    def _load_in_workers(
        cls,
        definition: ServableDefinition,
        version: int,
        device_target: str | None,
        observer: ObserverHub | None,
        warm_up: bool,
        plan: WorkerPlan,
    ) -> LoadedServable:
        """Start the worker processes, each loading and warming up the version; queue each
        model here, in front of them."""
        number, version_dir = resolve_version(definition, version)
        where = f"servable '{definition.name}' version {number}"
        pool = WorkerPool(definition, number, plan, device_target, where, warm_up)
        ready = pool.start()
        models: dict[str, LoadedModel] = {}
        try:
            for model in definition.models.values():
                loaded_there = ready.models[model.name]
                # A MindSpore network keeps nothing of its inputs: it may run on views of
                # shared memory. A Python callable might keep them: it gets copies.
                backend = WorkerBackend(
                    pool,
                    model.name,
                    loaded_there.input_specs,
                    lend=not model.origin.keeps_inputs,
                    warmed=loaded_there.warm_up,
                )
                try:
                    loaded, _ = _ready(model, backend, where, warm_up)
                except BaseException:
                    backend.close()
                    raise
                report = loaded_there.report
                if observer is not None and report is not None and observer.wants("on_warm_up"):
                    observer.on_warm_up(report)
                loaded.start(
                    observer, Step(definition.name, number, "model", model.name), scheduler_for(definition)
                )
                models[model.name] = loaded
        except BaseException:
            for loaded in models.values():
                loaded.close()
            pool.close()
            raise
        return cls(definition, number, version_dir, models, ready.device, observer, pool)

    def run_model(
        self, model: Model, instances: Sequence[tuple[Any, ...]], request: Request
    ) -> list[Outcome]:
        """Run one of this version's models over instances for ``request`` (``Model.call``),
        batched with other callers'."""
        return request.finish(self.submit_model(model, instances, None, request))

    def submit_model(
        self,
        model: Model,
        instances: Sequence[tuple[Any, ...]],
        labels: Sequence[str] | None,
        request: Request,
        inline: bool = True,
    ) -> Pending:
        """Queue instances on one of this version's models."""
        loaded = self.models.get(model.name)
        if loaded is None or not _same_model(loaded.model, model):
            raise MindServeError(
                f"model '{model.name}' is not a model of servable '{self.name}' version {self.version}"
            )
        return loaded.submit(instances, labels, request, inline)

    def submit_stage(
        self, stage: Stage, instances: Sequence[tuple[Any, ...]], request: Request
    ) -> list[Outcome] | Pending:
        """Run a stage: per instance at once in this thread, or queue it on its scheduler
        to be batched across callers."""
        scheduler = self.stage_schedulers.get(stage)
        if scheduler is None:
            return self._run_stage(stage, instances, request)
        return Pending(scheduler.submit(request, instances, inline=False), f"stage '{stage.name}'")

    def _run_stage(
        self,
        stage: Stage,
        instances: Sequence[tuple[Any, ...]],
        request: Request,
        requests: Sequence[Request] = (),
    ) -> list[Outcome]:
        """Run a stage over instances of ``request``, with this version and that request as
        the ones ``Model.call`` uses (``requests``: each instance's, when known)."""
        with running(self, request):
            return run_stage(stage, instances, requests)

    def _run_stage_batch(
        self, stage: Stage, instances: list[tuple[Any, ...]], requests: list[Request]
    ) -> list[Outcome]:
        """Run a batched stage over instances of several calls (``Model.call`` inside it is
        bounded by the latest of their deadlines)."""
        return self._run_stage(stage, instances, Request.covering(requests), requests)

    def _run_stage_in_worker(
        self, stage: Stage, instances: list[tuple[Any, ...]], requests: list[Request]
    ) -> list[Outcome]:
        """Run a batched stage in a worker process. A batch that cannot be sent or whose
        worker died runs again one instance at a time, so that only the instances that
        fail alone fail."""
        run = functools.partial(self._send_stage, stage)
        return isolating(run, instances, requests, run(instances, requests))

    def _send_stage(
        self, stage: Stage, instances: list[tuple[Any, ...]], requests: Sequence[Request]
    ) -> list[Outcome] | Failure:
        remaining = Request.covering(requests).remaining()
        timeout = None if remaining is None else max(remaining, 0.0)
        try:
            return self.pool.call(RunStage(stage.name, instances, timeout), requests)  # type: ignore[union-attr,no-any-return]
        except BaseException as exc:  # never an executor's death
            return Failure(StageError, f"stage '{stage.name}' failed: {describe(exc)}", exc)

    # -- lifecycle -----------------------------------------------------------------

    def enter(self, request: Request) -> bool:
        """A request starts running on this version; False (and not counted) if retired.

        No lock: set operations are atomic, and ``retire`` sets its flag before it looks at
        the set, while ``enter`` adds to the set before it looks at the flag, so one of the
        two always sees the other.
        """
        self._calls.add(request)
        if self._retired:
            self.leave(request)
            return False
        return True

    def leave(self, request: Request) -> None:
        """A request finished; shut down if retired and it was the last."""
        self._calls.discard(request)
        if self._retired and not self._calls:
            self._shutdown_once()

    def retire(self) -> None:
        """Take no new requests; shut down once the running ones have finished."""
        self._retired = True
        if not self._calls:
            self._shutdown_once()

    def _shutdown_once(self) -> None:
        with self._state:
            if self._shut:
                return
            self._shut = True
        self._shutdown()

    def _shutdown(self) -> None:
        for model in self.models.values():
            model.close()
        for scheduler in self.stage_schedulers.values():
            scheduler.close()
        if self.pool is not None:
            self.pool.release()  # the workers stop once every queue has drained
        if self.on_shutdown is not None:
            self.on_shutdown(self)

    def queue_depths(self) -> dict[Step, int]:
        """The instances queued now at each model and batched stage."""
        depths = {
            Step(self.name, self.version, "model", name): model.scheduler.queued if model.scheduler else 0
            for name, model in self.models.items()
        }
        for scheduler in self.stage_schedulers.values():
            if scheduler.step is not None:
                depths[scheduler.step] = scheduler.queued
        return depths

    def info(self, is_default: bool = True) -> ServableInfo:
        """A read-only description of this version."""
        methods = tuple(MethodInfo(m.name, m.inputs, m.outputs) for m in self.definition.methods.values())
        models = tuple(
            ModelInfo(
                name=m.name,
                kind=m.model.kind,
                source=m.model.origin.located(self.version_dir),
                with_batch_dim=m.model.with_batch_dim,
                fixed_batch_size=m.fixed_batch_size,
                inputs=m.backend.input_specs,
                batching=m.batching,
                warmed_up=m.warmed_up,
                batches=m.scheduler.batches if m.scheduler else 0,
                instances=m.scheduler.instances if m.scheduler else 0,
            )
            for m in self.models.values()
        )
        return ServableInfo(
            self.name,
            self.version,
            self.definition.directory,
            self.device,
            self.loaded_at,
            is_default,
            methods,
            models,
            self.pool.info() if self.pool is not None else (),
        )


def _ready(
    model: Model, executor: Executor, where: str, warm_up: bool
) -> tuple[LoadedModel, tuple[tuple[int, float], ...]]:
    """A model's queue on its executor, planned and warmed up (if ``warm_up``), and the
    batch sizes compiled with their seconds."""
    plan = ModelPlan.of(model, executor.input_specs, where)
    if not warm_up:
        return LoadedModel(model, plan, executor), ()
    result = executor.warm_up(plan)
    return LoadedModel(model, plan.warmed(result), executor), result.compiled


def scheduler_for(definition: ServableDefinition) -> type[Scheduler]:
    """The scheduler class a version's models and batched stages use."""
    return PerCallScheduler if definition.deterministic else Scheduler


def _same_model(running_model: Model, model: Model) -> bool:
    """Whether ``model`` is the running version's model: the same object, or the model a test
    replaced by it, or, in a worker process, the copy a stage's module made when it was
    imported there."""
    declared = running_model.stands_in_for or running_model
    return (
        running_model is model
        or declared is model
        or (declared.name == model.name and declared.kind == model.kind and in_worker_process)
    )

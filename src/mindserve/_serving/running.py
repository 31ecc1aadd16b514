"""A running version of a servable: its definition snapshot and its loaded models."""

from __future__ import annotations

import datetime
import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mindserve._batching.per_call import PerCallScheduler
from mindserve._batching.scheduler import UNLIMITED, Scheduler
from mindserve._calls import Pending, Request
from mindserve._define.model import Model
from mindserve._define.stage import Stage
from mindserve._observe.observer import ObserverHub, Step
from mindserve._observe.status import MethodInfo, ModelInfo, ServableInfo
from mindserve._outcomes import Outcome
from mindserve._serving.model_queue import LoadedModel
from mindserve._serving.placement import InProcess, Placement, StageRunner
from mindserve._serving.ready import model_of
from mindserve._serving.served import ServedDefinition
from mindserve._serving.stages import batched_stages, run_stage_in


class LoadedServable:
    """One version of a servable, loaded and ready to serve.

    It counts the requests running on it: once retired (stopped or replaced), it shuts its
    schedulers down when the last of them has finished. Its models and batched stages run
    where its ``placement`` says (in this process, or in worker processes); its schedulers
    stay in this process.
    """

    def __init__(
        self,
        definition: ServedDefinition,
        version: int,
        version_dir: str | None,
        models: dict[str, LoadedModel],
        device: str | None,
        observer: ObserverHub | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.definition = definition
        self.placement: Placement = InProcess((None, 0)) if placement is None else placement
        self.name = definition.name
        self.version = version
        self.version_dir = version_dir
        self.models = models
        self.device = device
        self.loaded_at = datetime.datetime.now(datetime.timezone.utc)
        self.where = where = f"servable '{self.name}' version {version}"
        self.stage_schedulers: dict[Stage, Scheduler] = {}
        for stage in batched_stages(definition):
            runner = self.placement.stage_runner(stage, functools.partial(self._run_stage_batch, stage))
            self.stage_schedulers[stage] = self._stage_scheduler(where, stage, runner, observer)
        self._state = threading.Lock()
        #: The calls in flight on this version: the one place a runtime counts them (close()
        #: waits for them through :meth:`wait_idle`).
        self._calls: set[Request] = set()
        self._retired = False
        self._shut = False
        #: Set once the version has shut down (retired, its last call over).
        self._idle = threading.Event()
        #: Called once, after the last call finished on a retired version.
        self.on_shutdown: Callable[[LoadedServable], None] | None = None

    def __repr__(self) -> str:
        return f"<LoadedServable {self.name!r} version {self.version}>"

    def _stage_scheduler(
        self, where: str, stage: Stage, runner: StageRunner, observer: ObserverHub | None
    ) -> Scheduler:
        """The queue that batches a batched stage's instances across callers."""
        return scheduler_for(self.definition)(
            f"{where}: stage '{stage.name}'",
            runner.run,
            what=f"stage '{stage.name}'",
            max_batch_size=stage.batch_size or UNLIMITED,
            capacity=runner.capacity,
            observer=observer,
            on_drained=runner.on_drained,
            step=Step(self.name, self.version, "stage", stage.name),
        )

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
        return model_of(self.models, model, self.where, self.definition).submit(
            instances, labels, request, inline
        )

    def submit_stage(
        self, stage: Stage, instances: Sequence[tuple[Any, ...]], request: Request
    ) -> list[Outcome] | Pending:
        """Run a stage: per instance at once in this thread, or queue it on its scheduler
        to be batched across callers."""
        scheduler = self.stage_schedulers.get(stage)
        if scheduler is None:
            return run_stage_in(self, stage, instances, request)
        return Pending(scheduler.submit(request, instances, inline=False), f"stage '{stage.name}'")

    def _run_stage_batch(
        self, stage: Stage, instances: list[tuple[Any, ...]], requests: list[Request]
    ) -> list[Outcome]:
        """Run a batched stage over instances of several calls (``Model.call`` inside it is
        bounded by the latest of their deadlines)."""
        return run_stage_in(self, stage, instances, Request.covering(requests), requests)

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
        try:
            self._shutdown()
        finally:
            self._idle.set()

    def wait_idle(self, deadline: float | None) -> list[Request]:
        """Wait until this retired version has shut down, or ``deadline`` (a
        ``time.monotonic()`` time; ``None``: for ever); return the calls still in flight."""
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._idle.wait(left):
            return []
        return list(self._calls)

    def _shutdown(self) -> None:
        for model in self.models.values():
            model.close()
        for scheduler in self.stage_schedulers.values():
            scheduler.close()
        self.placement.close()  # worker processes stop once every queue has drained
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
                lengths=m.lengths.buckets if m.lengths is not None else None,
                graphs=getattr(m.backend, "graphs", None),
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
            self.placement.workers(),
        )


def scheduler_for(definition: ServedDefinition) -> type[Scheduler]:
    """The scheduler class a version's models and batched stages use."""
    return PerCallScheduler if definition.deterministic else Scheduler

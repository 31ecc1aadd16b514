"""Where a servable version's models and batched stages run: a placement opens their
executors and batched-stage runners, and closes them.

:class:`InProcess` runs them in this process; ``mindserve._workers.placement.WorkerPlacement``
runs them in worker processes. The runtime chooses one per version it loads;
:mod:`mindserve._serving.loading` asks it for what it opens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs

from mindserve._calls import Request
from mindserve._define.model import Model
from mindserve._define.servable import ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import LoadError, MindServeError, describe
from mindserve._execution import mindspore as _mindspore
from mindserve._execution.executor import Executor
from mindserve._execution.plan import ModelPlan
from mindserve._observe.observer import WarmUpReport
from mindserve._observe.status import WorkerInfo
from mindserve._outcomes import Outcome
from mindserve._serving.model_queue import LoadedModel, loaded
from mindserve._serving.ready import plan_model

R = TypeVar("R")

#: Runs a batched stage over the instances of several calls, one request per instance.
StageBatch = Callable[[list[tuple[Any, ...]], list[Request]], list[Outcome]]


@attrs.frozen
class StageRunner:
    """How a batched stage's queue runs its batches: ``run``, up to ``capacity`` at once;
    ``on_drained`` is called once the queue has closed and drained."""

    run: StageBatch
    capacity: int
    on_drained: Callable[[], None] | None = None


class Placement(Protocol):
    """Opens a version's executors and batched-stage runners, and closes them."""

    #: Whether the version runs in other processes (it then has workers to report).
    remote: bool

    def open(
        self, definition: ServableDefinition, number: int, version_dir: str | None, where: str, warm_up: bool
    ) -> None:
        """Get ready to open the version's models (start worker processes)."""

    def load_model(self, model: Model, where: str, warm_up: bool) -> tuple[LoadedModel, WarmUpReport | None]:
        """One model's queue on its executor, planned and warmed up, and its warm-up report."""

    def device(self) -> str | None:
        """The device the version's models run on (once they are loaded)."""

    def stage_runner(self, stage: Stage, here: StageBatch) -> StageRunner:
        """How a batched stage's queue runs its batches (``here``: in this process, with this
        version)."""

    def workers(self) -> tuple[WorkerInfo, ...]:
        """The worker processes the version runs in."""

    def close(self) -> None:
        """The version is shut down: release what it holds once its queues have drained."""

    def discard(self) -> None:
        """The version failed to load: release what it holds now."""

    def wait_closed(self, timeout: float | None) -> None:
        """Wait until what the version holds is released."""


class InProcess:
    """Models and batched stages run in this process, on ``device`` (target, id).

    A worker process opens its models through it too (:meth:`open_model`), with no queue in
    front of them, and ``tells=False``: its main process keeps the queues, and says what each
    model's padding probe found (from the plan the worker sends it).
    """

    remote = False

    def __init__(self, device: tuple[str | None, int], *, tells: bool = True) -> None:
        self._device = device
        self._tells = tells
        self._definition: ServableDefinition | None = None
        self._number = 0
        self._version_dir: str | None = None
        self._used_mindspore = False

    def open(
        self, definition: ServableDefinition, number: int, version_dir: str | None, where: str, warm_up: bool
    ) -> None:
        self._definition, self._number, self._version_dir = definition, number, version_dir

    def load_model(self, model: Model, where: str, warm_up: bool) -> tuple[LoadedModel, WarmUpReport | None]:
        return self.open_model(model, where, warm_up, loaded)

    def open_model(
        self, model: Model, where: str, warm_up: bool, build: Callable[[Model, ModelPlan, Executor], R]
    ) -> tuple[R, WarmUpReport]:
        """One model opened here, planned and warmed up, as ``build`` makes it from its plan and
        executor (a queue, or a worker process's model with none), and its warm-up report;
        :class:`LoadError` if it fails."""
        assert self._definition is not None, "InProcess.open() was not called"
        started = time.perf_counter()
        try:
            executor = model.origin.open(model.name, self._version_dir, self._device, where)
            plan, compiled = plan_model(model, executor, where, warm_up, tells=self._tells)
            built = build(model, plan, executor)
        except MindServeError:
            raise
        except Exception as exc:  # a load never takes the runtime down
            raise LoadError(f"{where}: model '{model.name}' failed to load: {describe(exc)}") from exc
        seconds = time.perf_counter() - started
        self._used_mindspore = self._used_mindspore or model.origin.uses_mindspore
        return built, WarmUpReport(self._definition.name, self._number, model.name, compiled, seconds)

    def device(self) -> str | None:
        chosen = _mindspore.use_device(*self._device) if self._used_mindspore else None
        return f"{chosen[0]}:{chosen[1]}" if chosen else None

    def stage_runner(self, stage: Stage, here: StageBatch) -> StageRunner:
        return StageRunner(here, 1)

    def workers(self) -> tuple[WorkerInfo, ...]:
        return ()

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass

    def wait_closed(self, timeout: float | None) -> None:
        pass

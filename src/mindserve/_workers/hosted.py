"""What a worker process hosts for its main process: one servable version's executors and
batched stages, as Triton's Python backend hosts a model (initialize, execute, finalize).

:func:`host` opens each model's executor where the worker runs, plans and warms it up as the
main process would (:class:`~mindserve._serving.placement.InProcess`), and keeps it ready
(:class:`~mindserve._serving.ready.ReadyModel`). Each model's plan goes to the main process in
the worker's :class:`~mindserve._workers.protocol.Ready`: the model's queue there runs with it
as it is (no second padding probe), and says what the probe found (the worker does not).

The main process keeps every queue: a worker builds no serving version, no scheduler and no model queue. It runs each command as it
comes: a batch of a model on its executor, a batch of a batched stage as a version run in
this process runs it (:func:`~mindserve._serving.stages.run_stage_in`); ``Model.call`` inside
that stage runs this worker's model, in batches of that call's own instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mindserve._calls import Request
from mindserve._define.model import Model
from mindserve._define.servable import ServableDefinition
from mindserve._execution.executor import Executor
from mindserve._observe.observer import WarmUpReport
from mindserve._outcomes import Outcome
from mindserve._serving.placement import InProcess
from mindserve._serving.ready import ReadyModel, model_of, ready
from mindserve._serving.served import ServedDefinition
from mindserve._serving.stages import batched_stages, run_stage_in
from mindserve._serving.versions import resolve_version
from mindserve._workers.protocol import ModelReady, Ready


class HostedVersion:
    """A servable version as a worker process hosts it: its models ready on their executors,
    and its batched stages by name. It is the running version a stage run here reaches
    (:class:`~mindserve._calls.RunningVersion`)."""

    def __init__(
        self,
        definition: ServableDefinition,
        version: int,
        models: dict[str, ReadyModel],
        device: str | None,
        reports: dict[str, WarmUpReport],
    ) -> None:
        self.where = f"servable '{definition.name}' version {version}"
        #: As the main process serves it (a test kit's stand-ins included).
        self.definition = ServedDefinition.of(definition)
        self.models = models
        #: Each model's executor, by name: what a model's batch runs on.
        self.executors: dict[str, Executor] = {name: m.backend for name, m in models.items()}
        self.stages = {stage.name: stage for stage in batched_stages(definition)}
        self.device = device
        self._reports = reports

    def ready(self, pid: int) -> Ready:
        """What the main process's queues need of each model: its plan (probed and warmed
        up), its warm-up report, the shapes its load ran."""
        models = {
            name: ModelReady(
                plan=model.plan,
                report=self._reports.get(name),
                shapes=_shapes_run(model.backend),
            )
            for name, model in self.models.items()
        }
        return Ready(models, self.device, pid)

    def run_model(
        self, model: Model, instances: Sequence[tuple[Any, ...]], request: Request
    ) -> list[Outcome]:
        """``Model.call`` inside a stage run here: this worker's copy of the model (a stage's
        module imported here made its own ``Model`` objects), in this thread."""
        return model_of(self.models, model, self.where, self.definition, copied=True).run(
            instances, None, request
        )

    def run_stage(self, name: str, instances: list[tuple[Any, ...]], timeout: float | None) -> list[Outcome]:
        """A batch of a batched stage, for calls with ``timeout`` seconds left."""
        return run_stage_in(self, self.stages[name], instances, Request(timeout))

    def close(self) -> None:
        """Release every executor (the worker is stopping)."""
        for model in self.models.values():
            model.close()


def host(
    definition: ServableDefinition, version: int, device: tuple[str | None, int], warm_up: bool
) -> HostedVersion:
    """Open, plan and warm up every model of the version on ``device``; :class:`LoadError`
    (naming the version and the model) if one fails."""
    number, version_dir = resolve_version(definition, version)
    where = f"servable '{definition.name}' version {number}"
    placement = InProcess(device, tells=False)  # the main process tells, once
    placement.open(definition, number, version_dir, where, warm_up)
    models: dict[str, ReadyModel] = {}
    reports: dict[str, WarmUpReport] = {}
    try:
        for model in definition.models.values():
            models[model.name], reports[model.name] = placement.open_model(model, where, warm_up, ready)
    except BaseException:
        for loaded in models.values():
            loaded.close()
        raise
    return HostedVersion(definition, number, models, placement.device(), reports)


def _shapes_run(executor: object) -> frozenset[tuple[tuple[int, ...], ...]] | None:
    """The input shapes a MindSpore model's executor ran (``None`` for a callable)."""
    shapes = getattr(executor, "shapes", None)
    return None if shapes is None else frozenset(shapes)

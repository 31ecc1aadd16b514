"""A running version of a servable: its definition snapshot and its loaded models."""

from __future__ import annotations

import datetime
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mindserve._batching.scheduler import UNLIMITED, Scheduler
from mindserve._calls import Outcome, Pending, Request, running
from mindserve._define.model import Model
from mindserve._define.servable import ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import LoadError, MindServeError
from mindserve._execution import mindspore as _mindspore
from mindserve._execution.local import model_path, open_backend
from mindserve._observe.observer import ObserverHub, WarmUpReport
from mindserve._observe.status import MethodInfo, ModelInfo, ServableInfo
from mindserve._serving.model_queue import LoadedModel
from mindserve._serving.stages import run_stage
from mindserve._serving.versions import resolve_version

#: The environment variable that turns warm-up off for every runtime that does not say.
WARM_UP_VARIABLE = "MINDSERVE_WARM_UP"


def warm_up_from_environment() -> bool:
    """``MINDSERVE_WARM_UP``: ``0``/``false``/``no``/``off`` turn warm-up off; unset, on."""
    value = os.environ.get(WARM_UP_VARIABLE, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{WARM_UP_VARIABLE} must be 1 or 0 (or true/false, yes/no, on/off); got {value!r}")


class LoadedServable:
    """One version of a servable, loaded and ready to serve.

    It counts the requests running on it: once retired (stopped or replaced), it shuts its
    schedulers down when the last of them has finished.
    """

    def __init__(
        self,
        definition: ServableDefinition,
        version: int,
        version_dir: str | None,
        models: dict[str, LoadedModel],
        device: str | None,
        observer: ObserverHub | None = None,
    ) -> None:
        self.definition = definition
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
                        self.stage_schedulers[stage] = Scheduler(
                            f"{where}: stage '{stage.name}'",
                            functools.partial(self._run_stage_batch, stage),
                            what=f"stage '{stage.name}'",
                            max_batch_size=stage.batch_size or UNLIMITED,
                            observer=observer,
                        )
        self._state = threading.Lock()
        self._calls: set[Request] = set()
        self._retired = False
        self._shut = False
        #: Called once, after the last call finished on a retired version.
        self.on_shutdown: Callable[[LoadedServable], None] | None = None

    def __repr__(self) -> str:
        return f"<LoadedServable {self.name!r} version {self.version}>"

    @classmethod
    def load(
        cls,
        definition: ServableDefinition,
        version: int,
        device: tuple[str | None, int],
        observer: ObserverHub | None = None,
        warm_up: bool = True,
    ) -> LoadedServable:
        """Resolve the version, load and warm up every model; raise :class:`LoadError` on failure."""
        number, version_dir = resolve_version(definition, version)
        where = f"servable '{definition.name}' version {number}"
        models: dict[str, LoadedModel] = {}
        used_mindspore = False
        try:
            for model in definition.models.values():
                started = time.perf_counter()
                try:
                    loaded = LoadedModel(model, open_backend(model, version_dir, device, where), where)
                    compiled = loaded.warm_up(warm_up)
                except MindServeError:
                    raise
                except Exception as exc:  # a load never takes the runtime down
                    raise LoadError(
                        f"{where}: model '{model.name}' failed to load: {type(exc).__name__}: {exc}"
                    ) from exc
                if observer is not None and observer.wants("on_warm_up"):
                    seconds = time.perf_counter() - started
                    observer.on_warm_up(WarmUpReport(definition.name, number, model.name, compiled, seconds))
                loaded.start(observer)
                used_mindspore = used_mindspore or model.kind != "callable"
                models[model.name] = loaded
        except BaseException:
            for loaded in models.values():
                loaded.close()
            raise
        chosen = _mindspore.use_device(*device) if used_mindspore else None
        device_name = f"{chosen[0]}:{chosen[1]}" if chosen else None
        return cls(definition, number, version_dir, models, device_name, observer)

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
        if loaded is None or loaded.model is not model:
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
        self, stage: Stage, instances: Sequence[tuple[Any, ...]], request: Request
    ) -> list[Outcome]:
        """Run a stage over instances of ``request``, with this version and that request as
        the ones ``Model.call`` uses."""
        with running(self, request):
            return run_stage(stage, instances)

    def _run_stage_batch(
        self, stage: Stage, instances: list[tuple[Any, ...]], requests: list[Request]
    ) -> list[Outcome]:
        """Run a batched stage over instances of several calls (``Model.call`` inside it is
        bounded by the latest of their deadlines)."""
        return self._run_stage(stage, instances, Request.covering(requests))

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
        if self.on_shutdown is not None:
            self.on_shutdown(self)

    def info(self, is_default: bool = True) -> ServableInfo:
        """A read-only description of this version."""
        methods = tuple(MethodInfo(m.name, m.inputs, m.outputs) for m in self.definition.methods.values())
        models = tuple(
            ModelInfo(
                name=m.name,
                kind=m.model.kind,
                source=(
                    model_path(m.model, self.version_dir)
                    if m.model.kind == "mindir"
                    else getattr(m.model.source, "__qualname__", type(m.model.source).__name__)
                ),
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
        )

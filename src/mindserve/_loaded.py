"""A running version of a servable: its definition snapshot and its loaded models."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from mindserve import _mindspore
from mindserve._backends import model_path, open_backend
from mindserve._errors import LoadError, MindServeError
from mindserve._model import Model
from mindserve._model_runner import LoadedModel
from mindserve._outcome import Outcome
from mindserve._servable import ServableDefinition
from mindserve._status import MethodInfo, ModelInfo, ServableInfo
from mindserve._versions import resolve_version


class LoadedServable:
    """One version of a servable, loaded and ready to serve."""

    def __init__(
        self,
        definition: ServableDefinition,
        version: int,
        version_dir: str | None,
        models: dict[str, LoadedModel],
        device: str | None,
    ) -> None:
        self.definition = definition
        self.name = definition.name
        self.version = version
        self.version_dir = version_dir
        self.models = models
        self.device = device
        self.loaded_at = datetime.datetime.now(datetime.timezone.utc)

    def __repr__(self) -> str:
        return f"<LoadedServable {self.name!r} version {self.version}>"

    @classmethod
    def load(
        cls, definition: ServableDefinition, version: int, device: tuple[str | None, int]
    ) -> LoadedServable:
        """Resolve the version, load and warm up every model; raise :class:`LoadError` on failure."""
        number, version_dir = resolve_version(definition, version)
        where = f"servable '{definition.name}' version {number}"
        models: dict[str, LoadedModel] = {}
        used_mindspore = False
        for model in definition.models.values():
            try:
                backend = open_backend(model, version_dir, device, where)
                loaded = LoadedModel(model, backend, where)
                loaded.warm_up()
            except MindServeError:
                raise
            except Exception as exc:
                raise LoadError(
                    f"{where}: model '{model.name}' failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            used_mindspore = used_mindspore or model.kind != "callable"
            models[model.name] = loaded
        chosen = _mindspore.use_device(*device) if used_mindspore else None
        device_name = f"{chosen[0]}:{chosen[1]}" if chosen else None
        return cls(definition, number, version_dir, models, device_name)

    def run_model(
        self, model: Model, instances: Sequence[tuple[Any, ...]], labels: Sequence[str] | None = None
    ) -> list[Outcome]:
        """Run one of this version's models over instances."""
        loaded = self.models.get(model.name)
        if loaded is None or loaded.model is not model:
            raise MindServeError(
                f"model '{model.name}' is not a model of servable '{self.name}' version {self.version}"
            )
        return loaded.run(instances, labels)

    def info(self) -> ServableInfo:
        """A read-only description of this version."""
        methods = tuple(MethodInfo(m.name, m.inputs, m.outputs) for m in self.definition.methods.values())
        models = tuple(
            ModelInfo(
                name=m.name,
                kind=m.model.kind,
                source=(
                    model_path(m.model, self.version_dir)
                    if m.model.kind == "mindir"
                    else type(m.model.source).__name__
                ),
                with_batch_dim=m.model.with_batch_dim,
                fixed_batch_size=m.fixed_batch_size,
                inputs=m.backend.input_specs,
            )
            for m in self.models.values()
        )
        return ServableInfo(
            self.name,
            self.version,
            self.definition.directory,
            self.device,
            self.loaded_at,
            methods,
            models,
        )

"""Loading a servable version: resolve it, open its models where its placement says, and
queue each one here.

One loading path for every placement: the runtime's versions in this process or in worker
processes (a worker process itself hosts executors and stages, with no queue:
:mod:`mindserve._workers.hosted`).
"""

from __future__ import annotations

import os

from mindserve._define.servable import ServableDefinition
from mindserve._errors import InvalidArgumentError
from mindserve._observe.observer import ObserverHub, Step
from mindserve._serving.model_queue import LoadedModel
from mindserve._serving.placement import Placement
from mindserve._serving.running import LoadedServable, scheduler_for
from mindserve._serving.served import ServedDefinition
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
    raise InvalidArgumentError(
        f"{WARM_UP_VARIABLE} must be 1 or 0 (or true/false, yes/no, on/off); got {value!r}"
    )


def load(
    definition: ServableDefinition,
    version: int,
    placement: Placement,
    observer: ObserverHub | None = None,
    warm_up: bool = True,
    deterministic: bool = False,
) -> LoadedServable:
    """Resolve the version, load and warm up every model where ``placement`` puts it, and
    queue it here; raise :class:`LoadError` on failure.

    ``deterministic``: batch as ``mindserve.testing.DeterministicRuntime`` does (also when
    ``definition`` is a :class:`ServedDefinition` that says so: a test double's, or the one a
    worker process is sent).
    """
    definition = ServedDefinition.of(definition, deterministic)
    number, version_dir = resolve_version(definition, version)
    where = f"servable '{definition.name}' version {number}"
    placement.open(definition, number, version_dir, where, warm_up)
    models: dict[str, LoadedModel] = {}
    try:
        for model in definition.models.values():
            loaded, report = placement.load_model(model, where, warm_up)
            if observer is not None and report is not None and observer.wants("on_warm_up"):
                observer.on_warm_up(report)
            loaded.start(
                observer, Step(definition.name, number, "model", model.name), scheduler_for(definition)
            )
            models[model.name] = loaded
    except BaseException:
        for loaded in models.values():
            loaded.close()
        placement.discard()
        raise
    return LoadedServable(definition, number, version_dir, models, placement.device(), observer, placement)

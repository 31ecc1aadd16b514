"""The in-process runtime: starts servables, runs their methods, stops them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np

from mindserve._errors import (
    InferenceError,
    InstanceError,
    InvalidInputError,
    MethodNotFoundError,
    RuntimeClosedError,
    ServableNotFoundError,
    VersionNotFoundError,
)
from mindserve._loaded import LoadedServable
from mindserve._mindspore import normalize_device_target
from mindserve._pipeline import run_method
from mindserve._servable import Servable
from mindserve._status import ServableInfo
from mindserve._versions import check_version_number


class Runtime:
    """Runs servables in this process, on the local device, with no network layer.

    ``device_target``: ``"CPU"``, ``"Ascend"``, ``"GPU"``, or ``None`` for Ascend when the
    machine has one and the CPU otherwise. MindSpore's device is process-wide, so every
    runtime in a process uses the same device. Use it as a context manager, or call
    :meth:`close` when done::

        with mindserve.Runtime() as rt:
            rt.start(svc)
            rt.infer("mlp", "classify", [{"image": image}])

    Every method is thread-safe.
    """

    def __init__(self, *, device_target: str | None = None, device_id: int = 0) -> None:
        if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
            raise ValueError(f"device_id must be an int >= 0; got {device_id!r}")
        self._device = (normalize_device_target(device_target), device_id)
        self._lock = threading.RLock()
        self._running: dict[str, dict[int, LoadedServable]] = {}
        self._closed = False

    def __repr__(self) -> str:
        with self._lock:
            running = [f"{name} v{v}" for name, versions in self._running.items() for v in versions]
        state = "closed" if self._closed else f"running {running}"
        return f"<mindserve.Runtime {state}>"

    def __enter__(self) -> Runtime:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosedError(
                "this Runtime is closed; a closed runtime cannot be used again. "
                "Hint: create a new mindserve.Runtime()."
            )

    # -- lifecycle -----------------------------------------------------------------

    def start(self, servable: Servable, *, version: int = 0) -> ServableInfo:
        """Load a version of ``servable`` (0: the newest) and start serving it.

        Starting a servable whose name is already running replaces it once the new one
        has loaded; if loading fails, the :class:`LoadError` is raised and whatever was
        running keeps running.
        """
        self._check_open()
        if not isinstance(servable, Servable):
            raise TypeError(f"start() takes a mindserve.Servable; got {type(servable).__name__}")
        check_version_number(version)
        loaded = LoadedServable.load(servable.definition(), version, self._device)
        with self._lock:
            self._check_open()
            self._running[loaded.name] = {loaded.version: loaded}
        return loaded.info()

    def stop(self, servable: str | Servable | None = None, *, version: int | None = None) -> None:
        """Stop one servable (all its versions, or one ``version``), or everything if no name.

        Requests already running on it finish.
        """
        self._check_open()
        with self._lock:
            if servable is None:
                self._running.clear()
                return
            name = _name(servable)
            versions = self._versions(name)
            if version is None:
                del self._running[name]
                return
            if version not in versions:
                raise VersionNotFoundError(
                    f"servable '{name}' is not running version {version}; running: {sorted(versions)}"
                )
            del versions[version]
            if not versions:
                del self._running[name]

    def close(self) -> None:
        """Stop every servable; the runtime cannot be used afterwards. Closing twice is fine."""
        with self._lock:
            self._running.clear()
            self._closed = True

    def status(self) -> list[ServableInfo]:
        """What is running: one record per servable version, with its methods and models."""
        with self._lock:
            loaded = [v for versions in self._running.values() for v in versions.values()]
        return [item.info() for item in loaded]

    # -- inference -----------------------------------------------------------------

    def infer(
        self,
        servable: str | Servable,
        method: str,
        instances: Sequence[dict[str, Any]],
        *,
        version: int = 0,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run ``method`` of ``servable`` on a list of instances (dicts of input name to value).

        Returns one dict of output name to value per instance, in order. If any instance
        fails, raises :class:`InferenceError`, which holds every instance's outcome; with
        ``return_exceptions=True`` the failed instances' errors are returned in their place
        instead. ``version=0`` runs the newest running version.
        """
        self._check_open()
        loaded = self._lookup(_name(servable), version)
        found = loaded.definition.methods.get(method)
        if found is None:
            raise MethodNotFoundError(
                f"servable '{loaded.name}' has no method {method!r}; its methods: "
                f"{sorted(loaded.definition.methods)}"
            )
        if isinstance(instances, (str, bytes, dict, np.ndarray)) or not isinstance(instances, Sequence):
            raise InvalidInputError(
                f"instances must be a list of dicts; got {type(instances).__name__}. "
                f"Hint: wrap a single instance in a list: [instance]",
                servable=loaded.name,
                version=loaded.version,
                method=method,
            )
        results = run_method(loaded, found, instances)
        if not return_exceptions and any(isinstance(r, InstanceError) for r in results):
            raise InferenceError(results)
        return results

    def _versions(self, name: str) -> dict[int, LoadedServable]:
        versions = self._running.get(name)
        if versions is None:
            raise ServableNotFoundError(
                f"no servable named {name!r} is running; running: {sorted(self._running)}. "
                f"Hint: start it with Runtime.start()."
            )
        return versions

    def _lookup(self, name: str, version: int) -> LoadedServable:
        check_version_number(version)
        with self._lock:
            versions = self._versions(name)
            if version == 0:
                return versions[max(versions)]
            if version not in versions:
                raise VersionNotFoundError(
                    f"servable '{name}' is not running version {version}; running: {sorted(versions)}"
                )
            return versions[version]


def _name(servable: str | Servable) -> str:
    if isinstance(servable, Servable):
        return servable.name
    if not isinstance(servable, str):
        raise TypeError(f"a servable is named by a str or a Servable; got {type(servable).__name__}")
    return servable

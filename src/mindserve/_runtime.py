"""The in-process runtime: starts servables, runs their methods, stops them."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from mindserve._errors import (
    DeadlineExceededError,
    InferenceError,
    InstanceError,
    InvalidInputError,
    MethodNotFoundError,
    OverloadedError,
    RuntimeClosedError,
    ServableNotFoundError,
    VersionNotFoundError,
)
from mindserve._loaded import LoadedServable
from mindserve._method import Method
from mindserve._mindspore import normalize_device_target
from mindserve._pipeline import run_method, run_method_async
from mindserve._scheduler import CancelledCall, Request
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

    def __init__(
        self, *, device_target: str | None = None, device_id: int = 0, async_workers: int = 64
    ) -> None:
        if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
            raise ValueError(f"device_id must be an int >= 0; got {device_id!r}")
        if isinstance(async_workers, bool) or not isinstance(async_workers, int) or async_workers < 1:
            raise ValueError(f"async_workers must be an int >= 1; got {async_workers!r}")
        self._device = (normalize_device_target(device_target), device_id)
        self._lock = threading.RLock()
        self._running: dict[str, dict[int, LoadedServable]] = {}
        self._closed = False
        self._async_workers = async_workers
        self._pool: ThreadPoolExecutor | None = None

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
            if self._closed:
                loaded.retire()
                self._check_open()
            replaced = self._running.get(loaded.name, {})
            self._running[loaded.name] = {loaded.version: loaded}
        for old in replaced.values():
            old.retire()
        return loaded.info()

    def stop(self, servable: str | Servable | None = None, *, version: int | None = None) -> None:
        """Stop one servable (all its versions, or one ``version``), or everything if no name.

        Requests already running on it finish.
        """
        self._check_open()
        with self._lock:
            if servable is None:
                stopped = [v for versions in self._running.values() for v in versions.values()]
                self._running.clear()
            else:
                name = _name(servable)
                versions = self._versions(name)
                if version is None:
                    stopped = list(versions.values())
                    del self._running[name]
                elif version not in versions:
                    raise VersionNotFoundError(
                        f"servable '{name}' is not running version {version}; running: {sorted(versions)}"
                    )
                else:
                    stopped = [versions.pop(version)]
                    if not versions:
                        del self._running[name]
        for loaded in stopped:
            loaded.retire()

    def close(self) -> None:
        """Stop every servable and wait for accepted calls to finish; closing twice is fine.

        The runtime cannot be used afterwards.
        """
        with self._lock:
            stopped = [v for versions in self._running.values() for v in versions.values()]
            self._running.clear()
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for loaded in stopped:
            loaded.retire()

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
        timeout: float | None = None,
    ) -> list[Any]:
        """Run ``method`` of ``servable`` on a list of instances (dicts of input name to value).

        Returns one dict of output name to value per instance, in order. If any instance
        fails, raises :class:`InferenceError`, which holds every instance's outcome; with
        ``return_exceptions=True`` the failed instances' errors are returned in their place
        instead. ``version=0`` runs the newest running version.

        The instances are batched with other callers' on each model. ``timeout`` (seconds)
        bounds the whole call: instances still queued then are dropped before they reach
        the model, and :class:`DeadlineExceededError` is raised. A full model queue raises
        :class:`OverloadedError`.
        """
        request = Request(timeout)
        loaded, found = self._begin(servable, method, instances, version)
        try:
            return self._run(loaded, found, instances, request, return_exceptions)
        finally:
            loaded.leave()

    def infer_async(
        self,
        servable: str | Servable,
        method: str,
        instances: Sequence[dict[str, Any]],
        *,
        version: int = 0,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> Future[list[Any]]:
        """Like :meth:`infer`, but return a ``concurrent.futures.Future`` at once.

        Lookup errors (unknown servable, method or version) are raised here; everything
        else arrives through the future. Cancelling the future drops its instances that
        are still queued.
        """
        request = Request(timeout)
        loaded, found = self._begin(servable, method, instances, version)
        future: Future[list[Any]] = Future()
        future.add_done_callback(functools.partial(_abandon_if_cancelled, request))
        try:
            self._executor().submit(self._drive, future, loaded, found, instances, request, return_exceptions)
        except BaseException:
            loaded.leave()
            raise
        return future

    async def ainfer(
        self,
        servable: str | Servable,
        method: str,
        instances: Sequence[dict[str, Any]],
        *,
        version: int = 0,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> list[Any]:
        """Like :meth:`infer`, awaitable; works inside an already running event loop (Jupyter).

        Models and batched stages run on their own threads, so the event loop never blocks
        on them; per-instance stages run in the loop's thread. Cancelling the awaiting task
        drops its instances that are still queued.
        """
        request = Request(timeout)
        loaded, found = self._begin(servable, method, instances, version)
        try:
            try:
                results = await run_method_async(loaded, found, instances, request)
            except (DeadlineExceededError, OverloadedError) as exc:
                raise _located(exc, loaded, found) from None
            return _finish(results, return_exceptions)
        finally:
            loaded.leave()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            self._check_open()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._async_workers, thread_name_prefix="mindserve-async")
            return self._pool

    def _drive(
        self,
        future: Future[list[Any]],
        loaded: LoadedServable,
        method: Method,
        instances: Sequence[Any],
        request: Request,
        return_exceptions: bool,
    ) -> None:
        try:
            if future.cancelled():
                return
            result = self._run(loaded, method, instances, request, return_exceptions)
        except CancelledCall:
            return
        except BaseException as exc:  # handed to the caller through the future
            _settle(future, exception=exc)
        else:
            _settle(future, result=result)
        finally:
            loaded.leave()

    def _begin(
        self, servable: str | Servable, method: str, instances: Any, version: int
    ) -> tuple[LoadedServable, Method]:
        """Find the servable version and method, and count the call as running on it."""
        self._check_open()
        with self._lock:
            loaded = self._lookup(_name(servable), version)
            found = loaded.definition.methods.get(method)
            if found is None:
                raise MethodNotFoundError(
                    f"servable '{loaded.name}' has no method {method!r}; its methods: "
                    f"{sorted(loaded.definition.methods)}"
                )
            if type(instances) is not list and (
                isinstance(instances, (str, bytes, dict, np.ndarray)) or not isinstance(instances, Sequence)
            ):
                raise InvalidInputError(
                    f"instances must be a list of dicts; got {type(instances).__name__}. "
                    f"Hint: wrap a single instance in a list: [instance]",
                    servable=loaded.name,
                    version=loaded.version,
                    method=method,
                )
            loaded.enter()
        return loaded, found

    @staticmethod
    def _run(
        loaded: LoadedServable,
        method: Method,
        instances: Sequence[Any],
        request: Request,
        return_exceptions: bool,
    ) -> list[Any]:
        try:
            results = run_method(loaded, method, instances, request)
        except (DeadlineExceededError, OverloadedError) as exc:
            raise _located(exc, loaded, method) from None
        return _finish(results, return_exceptions)

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
    if type(servable) is str:
        return servable
    if isinstance(servable, Servable):
        return servable.name
    if not isinstance(servable, str):
        raise TypeError(f"a servable is named by a str or a Servable; got {type(servable).__name__}")
    return servable


def _settle(future: Future[Any], *, result: Any = None, exception: BaseException | None = None) -> None:
    """Complete a future unless its caller cancelled it meanwhile."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def _abandon_if_cancelled(request: Request, future: Future[Any]) -> None:
    if future.cancelled():
        request.abandon("cancelled")


def _located(exc: Exception, loaded: LoadedServable, method: Method) -> Exception:
    """The same error, its message prefixed with where it happened."""
    where = f"servable '{loaded.name}' version {loaded.version}, method '{method.name}'"
    return type(exc)(f"{where}: {exc}")


def _finish(results: list[Any], return_exceptions: bool) -> list[Any]:
    if not return_exceptions and any(isinstance(r, InstanceError) for r in results):
        raise InferenceError(results)
    return results

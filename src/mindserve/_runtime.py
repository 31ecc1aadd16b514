"""The in-process runtime: starts servables, runs their methods, stops them."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Callable

from mindserve._config import WorkerOutput, WorkerPlan
from mindserve._define.servable import Servable
from mindserve._errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    RuntimeClosedError,
    is_int,
)
from mindserve._execution.mindspore import normalize_device_target
from mindserve._observe.metrics import Metrics, MetricsCollector
from mindserve._observe.observer import (
    BatchReport,
    Observer,
    ObserverHub,
    VersionEvent,
)
from mindserve._observe.status import ServableInfo, ServableStatus
from mindserve._serving.calls import CallBook, CallFuture
from mindserve._serving.changes import VersionChanges
from mindserve._serving.dispatch import Dispatcher
from mindserve._serving.hosting import (
    VersionEvents,
    close_unreachable,
    find_slot,
    log_steps,
    queue_state,
    running_versions,
    servable_name,
    unhost,
    unhost_all,
    unusable_after_fork,
)
from mindserve._serving.loading import WARM_UP_VARIABLE, warm_up_from_environment
from mindserve._serving.pipeline import run_method, run_method_async, run_method_callback
from mindserve._serving.placement import InProcess, Placement
from mindserve._serving.running import LoadedServable
from mindserve._serving.slot import ServableSlot
from mindserve._serving.versions import check_version_number
from mindserve._workers.placement import WorkerPlacement


class Runtime:
    """Runs servables in this process, on the local device, with no network layer.

    ``device_target``: ``"CPU"``, ``"Ascend"``, ``"GPU"``, or ``None`` for Ascend when the
    machine has one and the CPU otherwise. MindSpore's device is process-wide, so every
    runtime in a process uses the same device.

    ``async_workers``: the threads that run the per-instance stages of :meth:`infer_async`
    calls (a pending call holds no thread while it waits). ``warm_up``: ``False`` loads
    models without running them (the first call at each batch size then compiles it), for
    tests and notebooks; ``None`` reads the ``MINDSERVE_WARM_UP`` environment variable
    (``0`` turns it off) and warms up otherwise. ``observers``: :class:`Observer` objects
    told about every version event, warm-up, batch, drop and call. ``metrics``: gather
    :meth:`metrics` and :meth:`batch_log` (on by default; the cost is measured in
    docs/benchmarks.md).

    Use it as a context manager, or call :meth:`close` when done::

        with mindserve.Runtime() as rt:
            rt.start(svc)
            rt.infer("mlp", "classify", [{"image": image}])

    Every method is thread-safe.
    """

    #: Batch every version as ``mindserve.testing.DeterministicRuntime`` does (it sets it).
    _deterministic = False

    def __init__(
        self,
        *,
        device_target: str | None = None,
        device_id: int = 0,
        async_workers: int = 8,
        warm_up: bool | None = None,
        observers: Iterable[Observer] = (),
        metrics: bool = True,
    ) -> None:
        if not is_int(device_id, 0):
            raise InvalidArgumentError(f"device_id must be an int >= 0; got {device_id!r}")
        if not is_int(async_workers, 1):
            raise InvalidArgumentError(f"async_workers must be an int >= 1; got {async_workers!r}")
        if warm_up is not None and not isinstance(warm_up, bool):
            raise InvalidArgumentError(
                f"warm_up must be True, False or None (from {WARM_UP_VARIABLE}); got {warm_up!r}"
            )
        if not isinstance(metrics, bool):
            raise InvalidArgumentError(f"metrics must be True or False; got {metrics!r}")
        self._device = (normalize_device_target(device_target), device_id)
        self._warm_up = warm_up_from_environment() if warm_up is None else warm_up
        self._lock = threading.RLock()
        self._hosted: dict[str, ServableSlot] = {}
        self._closed = False
        self._observer = ObserverHub(observers)
        self._metrics = MetricsCollector() if metrics else None
        if self._metrics is not None:  # told of versions, warm-ups and drops; counts the rest itself
            self._observer.add(self._metrics)
            self._observer.metrics = self._metrics
        #: Version events, delivered outside every servable's update lock; the listeners.
        self._events = VersionEvents(self._observer)
        #: Where the calls' ends are counted and reported.
        self._calls = CallBook(self._hosted, self._lock, self._metrics, self._observer)
        #: Every version this runtime loaded that is still referenced: each counts its
        #: calls in flight, which close() waits for (an updated-away version's included).
        self._versions: weakref.WeakSet[LoadedServable] = weakref.WeakSet()
        #: How start, load and update change the versions served.
        self._changes = VersionChanges(
            self._hosted,
            self._lock,
            self._events,
            self._versions,
            functools.partial(_placement, self._device),
            self._observer,
            self._warm_up,
            self._deterministic,
        )
        self._dispatcher = Dispatcher(async_workers)
        #: The parent's pid once this process was forked from the one that made the runtime.
        self._forked_from: int | None = None
        unusable_after_fork(self)
        # Closes this runtime if it becomes unreachable unclosed (a notebook cell re-run).
        # It holds the runtime's parts, never the runtime: no thread or callback does either.
        self._finalizer = weakref.finalize(
            self, close_unreachable, self._lock, self._hosted, self._dispatcher
        )
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        with self._lock:
            running = running_versions(self._hosted)
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

    async def __aenter__(self) -> Runtime:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, *, grace: float | None = 30.0) -> None:
        """:meth:`close`, awaitable: the waiting for calls to finish happens in a thread, so
        the event loop keeps running (calls awaited on it can finish)."""
        await asyncio.to_thread(self.close, grace=grace)

    def _check_open(self) -> None:
        if self._forked_from is not None:
            raise RuntimeClosedError(
                f"this Runtime was created in process {self._forked_from} and cannot be used in "
                f"process {os.getpid()}, a child made by fork(): its scheduler threads did not survive "
                f"the fork. Hint: create the Runtime after the fork, in the worker process (gunicorn: "
                f"without --preload, or in a post_fork hook; multiprocessing: inside the worker "
                f"function, or with the 'spawn' start method)."
            )
        if self._closed:
            raise RuntimeClosedError(
                "this Runtime is closed; a closed runtime cannot be used again. "
                "Hint: create a new mindserve.Runtime()."
            )

    # -- lifecycle -----------------------------------------------------------------

    def start(
        self,
        servable: Servable,
        *,
        version: int = 0,
        watch: bool = False,
        poll_interval: float = 1.0,
        workers: int | None = None,
        device_ids: Sequence[int] | None = None,
        worker_output: WorkerOutput | None = None,
        replace: bool = False,
    ) -> ServableInfo:
        """Load a version of ``servable`` (0: the newest) and serve it.

        By default its models run in this process. ``workers=N`` runs them in N worker
        processes on this runtime's device instead; ``device_ids=[0, 1]`` runs one worker
        per device id (on ``device_target``). Batches are still formed here, across every
        caller, and each goes to an idle worker; batched stages run in the workers too.
        ``worker_output`` sends each worker's standard output and error (MindSpore's own
        logs among them) to a file instead of this process's: a pattern such as
        ``"logs/{servable}_{version}_worker{index}.log"`` (also ``{device_id}``), or a
        function of those keywords returning the file name; a worker's file is made anew at
        its start and added to when it restarts. See docs/workers.md.

        Starting a name that is already running loads the new version first, then
        replaces every running version of that name in one step; calls already running on
        the old versions finish on them. If loading fails, the :class:`LoadError` is raised
        and whatever was running keeps running. That name must hold the same servable
        defined again (same directory and models: a notebook cell run again); another
        servable under a running name raises :class:`InvalidArgumentError` unless
        ``replace=True`` (or use :meth:`update`).

        ``watch=True`` polls the servable's directory every ``poll_interval`` seconds and
        hot-loads each new version directory once it has settled (see :meth:`update`).
        """
        self._check_open()
        if not isinstance(servable, Servable):
            raise ArgumentTypeError(f"start() takes a mindserve.Servable; got {type(servable).__name__}")
        check_version_number(version)
        if watch and servable.directory is None:
            raise InvalidArgumentError(f"servable '{servable.name}' has no directory to watch")
        if watch and (isinstance(poll_interval, bool) or not poll_interval > 0):
            raise InvalidArgumentError(
                f"poll_interval must be a number of seconds > 0; got {poll_interval!r}"
            )
        if not isinstance(replace, bool):
            raise ArgumentTypeError(f"replace must be True or False; got {replace!r}")
        plan = WorkerPlan.from_arguments(workers, device_ids, self._device[1], worker_output)
        watching = functools.partial(self._watch, poll_interval=poll_interval) if watch else None
        loaded = self._changes.start(servable, version, plan, replace, self._check_open, watching)
        return loaded.info()

    def load(self, servable: Servable, *, version: int) -> ServableInfo:
        """Load one more version of a running servable, beside the versions already running.

        It becomes the default (the version ``version=0`` calls go to) when it is newer than
        the default; pin the others with ``infer(..., version=N)``. Loading a version that
        already runs reloads it.
        """
        self._check_open()
        if not isinstance(servable, Servable):
            raise ArgumentTypeError(f"load() takes a mindserve.Servable; got {type(servable).__name__}")
        check_version_number(version)
        hosted = self._slot(servable)
        loaded = self._changes.add(hosted, servable, version, self._check_open)
        return loaded.info(is_default=loaded is hosted.default())

    def update(self, servable: str | Servable, *, version: int = 0) -> ServableInfo:
        """Hot update: load ``version`` (0: the newest on disk) and make it the default.

        The new version loads and warms up beside the running ones while they keep serving;
        then, in one step, new calls go to it and the previous default version stops
        taking calls. Calls already accepted finish on the version they started on; then
        that version unloads. If the new version fails to load or warm up, the error is
        raised (and logged, recorded in :meth:`servable_status`, sent to listeners) and
        nothing that was running changes. Pass a :class:`Servable` to update with a new
        definition, or its name to reload the running definition.
        """
        self._check_open()
        hosted = self._slot(servable)
        definition = servable if isinstance(servable, Servable) else hosted.servable
        check_version_number(version)
        loaded = self._changes.update(hosted, definition, version, self._check_open)
        return loaded.info(is_default=loaded is hosted.default())

    def stop(self, servable: str | Servable | None = None, *, version: int | None = None) -> None:
        """Stop one servable (all its versions, or one ``version``), or everything if no name.

        New calls no longer reach what stopped; calls already running on it finish.
        """
        self._check_open()
        with self._lock:
            if servable is None:
                stopped = unhost_all(self._hosted)
            else:
                stopped = unhost(self._hosted, self._slot(servable), version)
        for loaded in stopped:
            loaded.retire()

    def close(self, *, grace: float | None = 30.0) -> None:
        """Stop every servable and wait for accepted calls to finish; closing twice is fine.

        The grace period: calls still running ``grace`` seconds (default 30; ``None``: wait
        for ever) after close began fail with :class:`RuntimeClosedError`, and their queued
        instances are dropped. Worker processes then stop. The runtime cannot be used
        afterwards. In async code, use ``await rt.aclose()`` or ``async with Runtime()``.

        A runtime that becomes unreachable without ``close()`` (``rt = Runtime()`` run again
        in a notebook) is closed when Python collects it, with a
        :class:`RuntimeNotClosedWarning`; its calls had all ended by then.
        """
        self._finalizer.detach()
        if self._forked_from is not None:  # the parent's threads and locks are not ours to use
            self._closed = True
            return
        with self._lock:
            stopped = unhost_all(self._hosted)
            self._closed = True
        deadline = self._changes.retire_all(grace)
        self._dispatcher.close()
        for loaded in stopped:  # worker processes stop once their queues have drained
            loaded.placement.wait_closed(None if deadline is None else max(deadline - time.monotonic(), 5.0))

    def add_listener(self, listener: Callable[[VersionEvent], None]) -> None:
        """Call ``listener(event)`` for every version event: loaded, swapped, unloaded, failed.

        It runs in the thread where the event happens; an exception it raises is logged.
        (Sugar for an :class:`Observer` overriding ``on_version``.)
        """
        if not callable(listener):
            raise ArgumentTypeError(f"a listener must be callable; got {listener!r}")
        self._events.listen(listener)

    def remove_listener(self, listener: Callable[[VersionEvent], None]) -> None:
        if not self._events.unlisten(listener):
            raise InvalidArgumentError(f"{listener!r} is not a listener of this runtime")

    def add_observer(self, observer: Observer) -> None:
        """Report to ``observer`` from now on (see :class:`Observer`); schedulers of versions
        loaded before keep reporting to every observer added since, too."""
        self._observer.add(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observer.remove(observer)

    def status(self) -> list[ServableInfo]:
        """What is running: one record per servable version, with its methods and models."""
        with self._lock:
            pairs = [(v, v is h.default()) for h in self._hosted.values() for v in h.running()]
        return [loaded.info(is_default) for loaded, is_default in pairs]

    def servable_status(self, servable: str | Servable) -> ServableStatus:
        """One servable: its running versions, the default one, watching, and its last failure."""
        with self._lock:
            hosted = self._slot(servable)
            default = hosted.default()
            versions = hosted.running()
        return hosted.status([v.info(v is default) for v in versions])

    def metrics(self) -> Metrics:
        """A snapshot of what this runtime did, per servable version, method, model and
        batched stage: calls and instances by outcome, latency, queue wait, batch sizes and
        why batches ran, run time, queue depth, drops, load and warm-up times, workers.

        Counts start when a version loads; an unloaded version's counts stay (its last
        16 per servable). See docs/metrics.md; :mod:`mindserve.prometheus` exports them.
        """
        if self._metrics is None:
            raise InvalidArgumentError("this runtime gathers no metrics: it was made with metrics=False")
        with self._lock:
            running = [loaded for hosted in self._hosted.values() for loaded in hosted.running()]
        return self._metrics.snapshot(*queue_state(running))

    def batch_log(
        self,
        servable: str | Servable,
        model: str | None = None,
        *,
        stage: str | None = None,
        version: int = 0,
    ) -> list[BatchReport]:
        """The recent batches (the last 256 each) of a running version's models and batched
        stages, oldest first: why each ran (``reason``), its size, padding, wait and run time.

        ``model`` or ``stage`` picks one; with neither, every one of the version's.
        ``version=0``: the default version. See "Why are my batches small?" in docs/metrics.md.
        """
        if self._metrics is None:
            raise InvalidArgumentError("this runtime keeps no batch log: it was made with metrics=False")
        if model is not None and stage is not None:
            raise InvalidArgumentError("batch_log() takes a model or a stage, not both")
        check_version_number(version)
        loaded = self._slot(servable).pick(version)
        steps = log_steps(loaded, model, stage)
        return self._metrics.batch_log(loaded.name, loaded.version, steps)

    # -- helpers -------------------------------------------------------------------

    def _slot(self, servable: str | Servable) -> ServableSlot:
        """The running servable a verb names (by name or by its Servable)."""
        return find_slot(self._hosted, self._lock, servable_name(servable))

    def _watch(self, hosted: ServableSlot, poll_interval: float) -> None:
        """Load each new version directory of ``hosted``'s servable as it settles."""
        runtime = weakref.ref(self)  # the watcher's thread must not keep the runtime reachable

        def load(version: int) -> None:
            current = runtime()
            if current is not None and not current._closed:
                current.update(hosted.name, version=version)

        hosted.watch(hosted.servable.directory, poll_interval, load)  # type: ignore[arg-type]

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
        call = self._calls.begin(
            self._check_open, servable, method, instances, version, timeout, return_exceptions
        )
        try:
            results = run_method(call.loaded, call.method, instances, call.request)
        except BaseException as exc:
            return call.finish(None, exc)
        return call.finish(results, None)

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
        call = self._calls.begin(
            self._check_open, servable, method, instances, version, timeout, return_exceptions
        )
        future = CallFuture(call, self._dispatcher)
        try:
            run_method_callback(
                call.loaded, call.method, instances, call.request, self._dispatcher.submit, future.complete
            )
        except BaseException as exc:
            call.end(exc)
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

        The event loop never blocks on the method: models and batched stages run on their
        own threads, and a method with per-instance stages runs them on the runtime's pool
        of ``async_workers`` threads (the pool ``infer_async`` uses), so a slow decoding
        stage holds a pool thread, not the loop. Cancelling the awaiting task drops its
        instances that are still queued.
        """
        call = self._calls.begin(
            self._check_open, servable, method, instances, version, timeout, return_exceptions
        )
        try:
            results = await run_method_async(
                call.loaded, call.method, instances, call.request, self._dispatcher.submit
            )
        except BaseException as exc:
            return call.finish(None, exc)
        return call.finish(results, None)


def _placement(device: tuple[str | None, int], plan: WorkerPlan | None) -> Placement:
    """Where a version's models run: in this process on ``device``, or in worker processes
    as ``plan`` says (on ``device``'s target)."""
    return InProcess(device) if plan is None else WorkerPlacement(plan, device[0])

"""A runtime's servables as a whole: version events, unhosting (stop), what running
versions report to ``metrics()`` and ``batch_log()``, and the two ways a runtime ends
without ``close()``: garbage-collected unclosed, or inherited by a child made by fork()."""

from __future__ import annotations

import collections
import contextlib
import datetime
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator
from types import FrameType
from typing import Any, Callable

from mindserve._define.servable import Servable
from mindserve._errors import (
    ArgumentTypeError,
    NotFoundError,
    RuntimeNotClosedWarning,
    ServableNotFoundError,
    VersionNotFoundError,
)
from mindserve._observe.observer import EventKind, Observer, ObserverHub, Step, VersionEvent
from mindserve._observe.status import WorkerInfo
from mindserve._serving.dispatch import Dispatcher
from mindserve._serving.running import LoadedServable
from mindserve._serving.slot import ServableSlot


class Listener(Observer):
    """A version-event listener function, as an observer."""

    def __init__(self, listener: Callable[[VersionEvent], None]) -> None:
        self.listener = listener

    def on_version(self, event: VersionEvent) -> None:
        self.listener(event)


class VersionEvents:
    """Where a runtime's version events wait to reach its observers and listeners.

    Events are posted where they happen, often under a servable's update lock; they are
    delivered, in the order posted, only outside it: a listener may call back into the
    runtime (roll back on ``failed``, load something on ``swapped``) without deadlocking.
    A thread inside :meth:`holding` only posts; leaving it delivers. One thread delivers
    at a time: events posted meanwhile (by a listener's own call, or another thread) are
    delivered by it, after those before them.
    """

    def __init__(self, observer: ObserverHub) -> None:
        self._observer = observer
        self._lock = threading.Lock()
        self._waiting: collections.deque[VersionEvent] = collections.deque()
        self._delivering = False
        self._held = threading.local()
        #: The listener functions, each as the observer that calls it.
        self._listeners: dict[Callable[[VersionEvent], None], Listener] = {}

    def post(
        self, kind: EventKind, servable: str, version: int | None, error: BaseException | None = None
    ) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        with self._lock:
            self._waiting.append(VersionEvent(kind, servable, version, now, error))
        if not getattr(self._held, "depth", 0):
            self.deliver()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold this thread's events until the block ends (a servable's update lock is taken
        inside it), then deliver them."""
        self._held.depth = getattr(self._held, "depth", 0) + 1
        try:
            yield
        finally:
            self._held.depth -= 1
            if not self._held.depth:
                self.deliver()

    def deliver(self) -> None:
        with self._lock:
            if self._delivering:
                return
            self._delivering = True
        try:
            while True:
                with self._lock:
                    if not self._waiting:
                        self._delivering = False
                        return
                    event = self._waiting.popleft()
                self._observer.on_version(event)  # isolates what observers raise
        except BaseException:
            with self._lock:
                self._delivering = False
            raise

    def listen(self, listener: Callable[[VersionEvent], None]) -> None:
        """Call ``listener(event)`` for every event from now on."""
        with self._lock:
            adapter = self._listeners[listener] = Listener(listener)
        self._observer.add(adapter)

    def unlisten(self, listener: Callable[[VersionEvent], None]) -> bool:
        """Stop calling ``listener``; False if it was not listening."""
        with self._lock:
            adapter = self._listeners.pop(listener, None)
        if adapter is not None:
            self._observer.remove(adapter)
        return adapter is not None

    def unloaded(self, loaded: LoadedServable) -> None:
        """A version's last call finished (its ``on_shutdown``)."""
        self.post(EventKind.UNLOADED, loaded.name, loaded.version)


def find_slot(hosted: dict[str, ServableSlot], lock: threading.RLock, name: str) -> ServableSlot:
    """The running servable ``name``, or :class:`ServableNotFoundError` naming those running."""
    slot = hosted.get(name)  # a dict read needs no lock
    if slot is None:
        with lock:
            running = sorted(hosted)
        raise ServableNotFoundError(
            f"no servable named {name!r} is running; running: {running}. Hint: start it with Runtime.start()."
        )
    return slot


def servable_name(servable: str | Servable) -> str:
    """The name a runtime's verbs are given: a str, or a :class:`Servable`'s name."""
    if type(servable) is str:
        return servable
    if isinstance(servable, Servable):
        return servable.name
    if not isinstance(servable, str):
        raise ArgumentTypeError(f"a servable is named by a str or a Servable; got {type(servable).__name__}")
    return servable


def running_versions(hosted: dict[str, ServableSlot]) -> list[str]:
    """The versions running, as ``"name vN"`` (the caller holds the runtime's lock)."""
    return [f"{name} v{v}" for name, slot in hosted.items() for v in slot.versions]


def unhost_all(hosted: dict[str, ServableSlot]) -> list[LoadedServable]:
    """Forget every servable (the caller holds the runtime's lock) and stop its watcher;
    return its versions."""
    slots = list(hosted.values())
    hosted.clear()
    for slot in slots:
        slot.stop_watching()
    return [loaded for slot in slots for loaded in slot.versions.values()]


def unhost(hosted: dict[str, ServableSlot], slot: ServableSlot, version: int | None) -> list[LoadedServable]:
    """Stop one version of ``slot`` (``None``: all; the caller holds the runtime's lock);
    forget the servable once none runs, and return the versions stopped."""
    if version is None:
        stopped = list(slot.versions.values())
    else:
        if not version:
            raise VersionNotFoundError("stop() takes a version >= 1, or None for all versions")
        stopped = slot.remove(version)
    if version is None or not slot.versions:
        slot.stop_watching()
        del hosted[slot.name]
    return stopped


def close_unreachable(lock: threading.RLock, hosted: dict[str, ServableSlot], dispatcher: Dispatcher) -> None:
    """Close a runtime Python collected unclosed. The closing happens on a thread of its
    own: a collection may run in any thread, even one holding a scheduler's lock."""
    running = running_versions(dict(hosted))  # a copy, without the lock: this thread may hold another

    def close() -> None:
        with lock:
            stopped = unhost_all(hosted)
        for loaded in stopped:
            loaded.retire()
        dispatcher.close()

    try:
        threading.Thread(target=close, name="mindserve-close-unreachable", daemon=True).start()
    except RuntimeError:  # the interpreter is shutting down: its threads end with it
        return
    warnings.warn(
        RuntimeNotClosedWarning(
            f"a mindserve.Runtime running {running} was garbage-collected without close(); "
            f"mindserve closed it now. Hint: use 'with mindserve.Runtime() as rt:', "
            f"or call rt.close() when done with it."
        ),
        stacklevel=_user_stacklevel(),
    )


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by this function's caller point at the
    first frame outside mindserve and the machinery that called it (``weakref.finalize``,
    the garbage collector): the user's line that dropped the runtime."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    level = 2  # the caller's caller
    frame: FrameType | None = sys._getframe(level)
    while frame is not None and (
        frame.f_code.co_filename.startswith(package) or frame.f_code.co_filename == weakref.__file__
    ):
        level, frame = level + 1, frame.f_back
    return level if frame is not None else 2


#: Every object with a ``_forked_from`` attribute to set in a child made by fork().
_forkable: weakref.WeakSet[Any] = weakref.WeakSet()


def unusable_after_fork(runtime: Any) -> None:
    """In a child made by fork(), set ``runtime._forked_from`` to the parent's pid."""
    _forkable.add(runtime)


def _forked() -> None:
    parent = os.getppid()
    for runtime in list(_forkable):
        runtime._forked_from = parent


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def queue_state(
    running: list[LoadedServable],
) -> tuple[dict[Step, int], dict[tuple[str, int], tuple[WorkerInfo, ...]]]:
    """What the running versions' queues hold now, and their workers (for ``metrics()``)."""
    depths: dict[Step, int] = {}
    workers: dict[tuple[str, int], tuple[WorkerInfo, ...]] = {}
    for loaded in running:
        depths.update(loaded.queue_depths())
        if loaded.placement.remote:
            workers[(loaded.name, loaded.version)] = loaded.placement.workers()
    return depths, workers


def log_steps(loaded: LoadedServable, model: str | None, stage: str | None) -> list[tuple[str, str]]:
    """The steps of a running version whose batch log ``batch_log()`` reads: one model, one
    batched stage, or (neither given) all of them."""
    if model is not None:
        if model not in loaded.models:
            hint = (
                f". Hint: {model!r} is a batched stage: batch_log(..., stage={model!r})"
                if any(s.name == model for s in loaded.stage_schedulers)
                else ""
            )
            raise NotFoundError(
                f"servable '{loaded.name}' version {loaded.version} has no model {model!r}; "
                f"its models: {sorted(loaded.models)}{hint}"
            )
        return [("model", model)]
    if stage is not None:
        batched = sorted(s.name for s in loaded.stage_schedulers)
        if stage not in batched:
            raise NotFoundError(
                f"servable '{loaded.name}' version {loaded.version} has no batched stage {stage!r}; "
                f"its batched stages: {batched}"
            )
        return [("stage", stage)]
    return [("model", name) for name in loaded.models] + [("stage", s.name) for s in loaded.stage_schedulers]

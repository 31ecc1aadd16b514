"""Changing which versions a runtime serves: load a version where its placement puts it,
then swap it in by one of the slot's rules, post the version events and retire what it
replaced; and, when the runtime closes, retire every version and wait for its calls.

Every change holds the runtime's version events (they are delivered in order, outside
every lock, once it ends) and the servable's update lock (one change per servable at a
time). The version loads outside the runtime's lock, so calls keep running meanwhile; it is
swapped in under that lock, after ``check_open`` (the runtime may have closed meanwhile:
the new version is then discarded).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable

from mindserve._config import WorkerPlan
from mindserve._define.servable import Servable
from mindserve._errors import InvalidArgumentError, MindServeError, ServableNotFoundError
from mindserve._observe.observer import EventKind, ObserverHub
from mindserve._outcomes import Abandoned
from mindserve._serving import loading
from mindserve._serving.hosting import VersionEvents
from mindserve._serving.placement import Placement
from mindserve._serving.running import LoadedServable
from mindserve._serving.slot import ServableSlot
from mindserve._serving.versions import resolve_version


class VersionChanges:
    """The version changes of one runtime: its servables by name (``hosted``, guarded by
    ``lock``), its events, and every version it loaded (``versions``, for ``close()``).

    ``place(plan)`` is where a version's models run: in this process (``plan`` is ``None``)
    or in worker processes. ``observer``, ``warm_up`` and ``deterministic`` go to every load.
    """

    def __init__(
        self,
        hosted: dict[str, ServableSlot],
        lock: threading.RLock,
        events: VersionEvents,
        versions: weakref.WeakSet[LoadedServable],
        place: Callable[[WorkerPlan | None], Placement],
        observer: ObserverHub,
        warm_up: bool,
        deterministic: bool,
    ) -> None:
        self.hosted = hosted
        self.lock = lock
        self.events = events
        self.versions = versions
        self._place = place
        self._observer = observer
        self._warm_up = warm_up
        self._deterministic = deterministic

    def start(
        self,
        servable: Servable,
        version: int,
        plan: WorkerPlan | None,
        replace: bool,
        check_open: Callable[[], None],
        watch: Callable[[ServableSlot], None] | None,
    ) -> LoadedServable:
        """Serve ``version`` of ``servable`` under its name in place of every running version
        of that name (another slot's too, if one was started meanwhile); ``watch`` the slot's
        directory if given. Another servable under a running name is refused unless
        ``replace``."""
        with self.lock:
            hosted = self.hosted.get(servable.name) or ServableSlot(servable)
        difference = None if replace else hosted.other_servable(servable)
        if difference is not None:
            raise InvalidArgumentError(
                f"a different servable named '{servable.name}' is already running ({difference}). "
                f"Hint: pass replace=True to start() to replace it, or rt.update(servable) to load "
                f"the new definition as its new default version; or give this one another name."
            )
        with self.events.holding(), hosted.update_lock:
            loaded = self._load(hosted, servable, version, plan)
            with self.lock:
                _accept(loaded, check_open)
                retired: list[LoadedServable] = []
                current = self.hosted.get(hosted.name)
                if current is not None and current is not hosted:  # started meanwhile elsewhere
                    retired += current.versions.values()
                    current.stop_watching()
                hosted.servable = servable
                hosted.plan = plan
                retired += hosted.replace_all(loaded)
                hosted.stop_watching()
                if watch is not None:
                    watch(hosted)
                self.hosted[hosted.name] = hosted
            self._swapped(loaded, retired)
        return loaded

    def add(
        self, hosted: ServableSlot, servable: Servable, version: int, check_open: Callable[[], None]
    ) -> LoadedServable:
        """Serve ``version`` beside the running ones (the default if it is the newest)."""
        return self._swap_in(hosted, servable, version, check_open, hosted.add)

    def update(
        self, hosted: ServableSlot, servable: Servable, version: int, check_open: Callable[[], None]
    ) -> LoadedServable:
        """Serve ``version`` of ``servable`` as the default; the previous default retires."""
        return self._swap_in(hosted, servable, version, check_open, hosted.promote, adopt=True)

    def _swap_in(
        self,
        hosted: ServableSlot,
        servable: Servable,
        version: int,
        check_open: Callable[[], None],
        rule: Callable[[LoadedServable], list[LoadedServable]],
        adopt: bool = False,
    ) -> LoadedServable:
        """Load ``version`` where the slot's versions run, and swap it in by ``rule`` (one of
        the slot's rules, returning the versions it retired); ``adopt``: later updates load
        from ``servable``."""
        with self.events.holding(), hosted.update_lock:
            loaded = self._load(hosted, servable, version, hosted.plan)
            with self.lock:
                self._accept_hosted(hosted, loaded, check_open)
                retired = rule(loaded)
                if adopt:
                    hosted.servable = servable
            self._swapped(loaded, retired)
        return loaded

    def retire_all(self, grace: float | None) -> float | None:
        """Retire every version loaded (the running ones, and any still finishing calls), and
        wait for their calls for ``grace`` seconds (``None``: for ever); give up on the calls
        still running then. Return that deadline (a ``time.monotonic()`` time)."""
        versions = list(self.versions)
        for loaded in versions:
            loaded.retire()
        deadline = None if grace is None else time.monotonic() + grace
        for loaded in versions:
            for request in loaded.wait_idle(deadline):
                request.abandon(Abandoned.CLOSED)
        return deadline

    def _load(
        self, hosted: ServableSlot, servable: Servable, version: int, plan: WorkerPlan | None
    ) -> LoadedServable:
        """Load a version (outside the runtime lock) where ``plan`` places it; report a
        failure to listeners."""
        tried: int | None = version or None  # None: the newest, if even that is unknown
        try:
            definition = servable.definition()
            tried = resolve_version(definition, version)[0]
            loaded = loading.load(
                definition, tried, self._place(plan), self._observer, self._warm_up, self._deterministic
            )
        except MindServeError as exc:
            hosted.failed(tried, exc)
            self.events.post(EventKind.FAILED, hosted.name, tried, exc)
            raise
        loaded.on_shutdown = self.events.unloaded
        self.versions.add(loaded)
        self.events.post(EventKind.LOADED, loaded.name, loaded.version)
        return loaded

    def _accept_hosted(
        self, hosted: ServableSlot, loaded: LoadedServable, check_open: Callable[[], None]
    ) -> None:
        """The servable may have been stopped (or restarted) while the version loaded."""
        _accept(loaded, check_open)
        if self.hosted.get(hosted.name) is not hosted:
            loaded.retire()
            raise ServableNotFoundError(
                f"servable '{hosted.name}' was stopped or restarted while version {loaded.version} loaded; "
                f"the new version was discarded"
            )

    def _swapped(self, loaded: LoadedServable, retired: list[LoadedServable]) -> None:
        self.events.post(EventKind.SWAPPED, loaded.name, loaded.version)
        for old in retired:
            old.retire()


def _accept(loaded: LoadedServable, check_open: Callable[[], None]) -> None:
    """Discard ``loaded`` if the runtime closed while it loaded (``check_open`` raises)."""
    try:
        check_open()
    except BaseException:
        loaded.retire()
        raise

"""One servable name inside a runtime: its running versions, its watcher, its last failure.

Every change to the set of running versions happens under the runtime's lock; calls read
it without a lock (each change publishes the new default before it removes the old one),
so a new call sees either the old default version or the new one, never a mix. A call
that picked a version retired meanwhile is turned away by :meth:`LoadedServable.enter`
and looks again; a call keeps the version it started on for all its steps.
"""

from __future__ import annotations

import datetime
import os
import threading
from typing import Callable

from mindserve._config import WorkerPlan
from mindserve._define.servable import Servable
from mindserve._errors import VersionNotFoundError
from mindserve._observe.status import ServableInfo, ServableStatus
from mindserve._serving.running import LoadedServable
from mindserve._serving.versions import Watcher


class ServableSlot:
    """The running versions of one servable name, and how it is kept up to date."""

    def __init__(self, servable: Servable) -> None:
        self.name = servable.name
        #: The definition that later updates load (replaced by each start).
        self.servable = servable
        self.versions: dict[int, LoadedServable] = {}
        #: The version ``version=0`` calls go to: held, not derived, so that a rollback holds.
        self._default: LoadedServable | None = None
        #: Held while a version loads, so that two updates of one name never interleave.
        self.update_lock = threading.Lock()
        self.watcher: Watcher | None = None
        #: The worker processes its versions run in (``None``: this process), as started.
        self.plan: WorkerPlan | None = None
        self.last_error: BaseException | None = None
        self.last_error_version: int | None = None
        self.last_error_at: datetime.datetime | None = None

    def default(self) -> LoadedServable | None:
        """The default version: the one ``version=0`` calls go to."""
        return self._default

    @property
    def default_version(self) -> int | None:
        default = self._default
        return None if default is None else default.version

    def running(self) -> list[LoadedServable]:
        """The running versions, oldest first."""
        return [self.versions[v] for v in sorted(self.versions)]

    def pick(self, version: int) -> LoadedServable:
        if version == 0:
            chosen = self.default()
            if chosen is not None:
                return chosen
        else:
            found = self.versions.get(version)  # one read: stop() may change it meanwhile
            if found is not None:
                return found
        raise VersionNotFoundError(
            f"servable '{self.name}' is not running version {version}; running: {sorted(self.versions)}"
        )

    # -- the rules of the version set: each returns the versions it retired --------------

    def replace_all(self, loaded: LoadedServable) -> list[LoadedServable]:
        """``start``: ``loaded`` becomes the only running version, and the default."""
        retired = list(self.versions.values())
        self._default = loaded
        self.versions = {loaded.version: loaded}
        return retired

    def add(self, loaded: LoadedServable) -> list[LoadedServable]:
        """``load``: run ``loaded`` beside the others (replacing the same version number).

        It becomes the default when it is newer than the default.
        """
        previous = self.versions.get(loaded.version)
        self.versions[loaded.version] = loaded
        if self._default is None or self._default is previous or loaded.version > self._default.version:
            self._default = loaded
        return [previous] if previous is not None else []

    def promote(self, loaded: LoadedServable) -> list[LoadedServable]:
        """``update``: ``loaded`` becomes the default, older or newer; the previous default
        and a running copy of the same version number stop taking calls."""
        retired = []
        same = self.versions.get(loaded.version)
        if same is not None:
            retired.append(same)
        previous = self._default
        self.versions[loaded.version] = loaded
        self._default = loaded
        if previous is not None and previous is not same:
            del self.versions[previous.version]
            retired.append(previous)
        return retired

    def remove(self, version: int) -> list[LoadedServable]:
        """``stop(version=N)``: stop one version; if it was the default, the newest left is."""
        stopped = self.pick(version)
        if stopped is self._default:
            rest = [v for v in self.versions if v != version]
            self._default = self.versions[max(rest)] if rest else None
        del self.versions[version]
        return [stopped]

    def other_servable(self, servable: Servable) -> str | None:
        """How ``servable`` differs from the one running under this name (another directory,
        other models), or ``None`` when it is the same servable defined again (a notebook
        cell run again, edited methods and stages included)."""
        running = self.servable
        if servable is running:
            return None
        differences = []
        here, there = _where(running.directory), _where(servable.directory)
        if here != there:
            differences.append(f"its directory is {there!r}, the running one's {here!r}")
        if sorted(running.models) != sorted(servable.models):
            differences.append(
                f"its models are {sorted(servable.models)}, the running one's {sorted(running.models)}"
            )
        return "; ".join(differences) or None

    def failed(self, version: int | None, error: BaseException) -> None:
        self.last_error = error
        self.last_error_version = version
        self.last_error_at = datetime.datetime.now(datetime.timezone.utc)

    def watch(self, directory: str, poll_interval: float, load: Callable[[int], None]) -> None:
        """Poll ``directory`` and ``load(version)`` each new version once it has settled
        (replacing any watcher); a failed load is recorded here."""
        self.stop_watching()
        self.watcher = Watcher(
            directory,
            poll_interval,
            lambda: self.default_version,
            load,
            name=f"watch {self.name}",
            on_error=self.failed,
        )
        self.watcher.start()

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def status(self, infos: list[ServableInfo]) -> ServableStatus:
        return ServableStatus(
            name=self.name,
            default_version=self.default_version,
            versions=tuple(infos),
            watching=self.watcher is not None and self.watcher.alive,
            last_error=self.last_error,
            last_error_version=self.last_error_version,
            last_error_at=self.last_error_at,
        )


def _where(directory: str | None) -> str | None:
    return None if directory is None else os.path.realpath(directory)

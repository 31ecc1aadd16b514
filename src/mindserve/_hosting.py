"""One servable name inside a runtime: its running versions, its watcher, its last failure.

Every change to the set of running versions happens under the runtime's lock, in one
step, so a new call sees either the old default version or the new one, never a mix;
a call keeps the version it started on for all its steps.
"""

from __future__ import annotations

import datetime
import threading

from mindserve._errors import VersionNotFoundError
from mindserve._loaded import LoadedServable
from mindserve._servable import Servable
from mindserve._status import ServableInfo, ServableStatus
from mindserve._watcher import Watcher


class Hosted:
    """The running versions of one servable name, and how it is kept up to date."""

    def __init__(self, servable: Servable) -> None:
        self.name = servable.name
        #: The definition that later updates load (replaced by each start).
        self.servable = servable
        self.versions: dict[int, LoadedServable] = {}
        #: Held while a version loads, so that two updates of one name never interleave.
        self.update_lock = threading.Lock()
        self.watcher: Watcher | None = None
        self.last_error: BaseException | None = None
        self.last_error_version: int | None = None
        self.last_error_at: datetime.datetime | None = None

    def default(self) -> LoadedServable | None:
        """The newest running version: the one ``version=0`` calls go to."""
        return self.versions[max(self.versions)] if self.versions else None

    def pick(self, version: int) -> LoadedServable:
        if version == 0:
            chosen = self.default()
            if chosen is not None:
                return chosen
        elif version in self.versions:
            return self.versions[version]
        raise VersionNotFoundError(
            f"servable '{self.name}' is not running version {version}; running: {sorted(self.versions)}"
        )

    def failed(self, version: int | None, error: BaseException) -> None:
        self.last_error = error
        self.last_error_version = version
        self.last_error_at = datetime.datetime.now(datetime.timezone.utc)

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def status(self, infos: list[ServableInfo]) -> ServableStatus:
        default = self.default()
        return ServableStatus(
            name=self.name,
            default_version=default.version if default else None,
            versions=tuple(infos),
            watching=self.watcher is not None,
            last_error=self.last_error,
            last_error_version=self.last_error_version,
            last_error_at=self.last_error_at,
        )

"""Watching a servable's directory for new version directories.

The rule for a directory that is still being copied: a new version directory is loaded
only when it holds at least one file and its listing -- every file's path, size and
modification time -- is the same on two polls in a row (``poll_interval`` apart). A version
that fails to load is not tried again until its listing changes. Copying into a directory
with another name and renaming it to its number when complete is always safe.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from mindserve._errors import MindServeError
from mindserve._versions import list_versions

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(directory: str) -> Fingerprint:
    """Every file under ``directory``: (relative path, size, mtime in ns), sorted."""
    entries = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:  # removed while we looked: the directory is not settled
                continue
            entries.append((os.path.relpath(path, directory), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class Watcher:
    """Polls ``directory``; calls ``load(version)`` for a settled version newer than ``current()``."""

    def __init__(
        self,
        directory: str,
        poll_interval: float,
        current: Callable[[], int | None],
        load: Callable[[int], object],
        name: str = "watcher",
    ) -> None:
        self.directory = directory
        self.poll_interval = poll_interval
        self._current = current
        self._load = load
        self._seen: dict[int, Fingerprint] = {}
        self._failed: dict[int, Fingerprint] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mindserve:{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.poll()

    def poll(self) -> int | None:
        """Look once; load the newest settled new version. Returns the version loaded, if any."""
        versions = list_versions(self.directory)
        current = self._current()
        candidates = [v for v in versions if current is None or v > current]
        if not candidates:
            return None
        newest = candidates[-1]
        now = fingerprint(os.path.join(self.directory, str(newest)))
        settled = bool(now) and self._seen.get(newest) == now
        self._seen[newest] = now
        if not settled or self._failed.get(newest) == now:
            return None
        try:
            self._load(newest)
        except MindServeError:  # reported through events and status; retried when it changes
            self._failed[newest] = now
            return None
        return newest

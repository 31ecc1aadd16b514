"""Version directories, ``<directory>/1/``, ``<directory>/2/``, ... (version 0 means the
newest), and the watcher that picks up new ones.

The watcher's rule for a directory that is still being copied: a new version directory is
loaded only when it holds at least one file and its listing -- every file's path, size and
modification time -- is the same on two polls in a row (``poll_interval`` apart). A version
that fails to load is not tried again until its listing changes. Copying into a directory
with another name and renaming it to its number when complete is always safe.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from mindserve._define.servable import ServableDefinition
from mindserve._errors import ArgumentTypeError, LoadError, MindServeError, VersionNotFoundError, is_int
from mindserve._observe.visible import show_unconfigured, warn_event

logger = logging.getLogger("mindserve")


def check_version_number(version: object) -> int:
    """A version number is an int >= 0 (0: the newest)."""
    if type(version) is not int or version < 0:
        message = f"a version must be an int >= 1, or 0 for the newest; got {version!r}"
        raise (VersionNotFoundError if is_int(version) else ArgumentTypeError)(message)
    return version


def list_versions(directory: str) -> list[int]:
    """The numeric version directories under ``directory``, ascending."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    return sorted(
        int(entry)
        for entry in entries
        if entry.isascii()  # '²' and '①' are digits to Python, and int() refuses them
        and entry.isdigit()
        and int(entry) > 0
        and str(int(entry)) == entry
        and os.path.isdir(os.path.join(directory, entry))
    )


def resolve_version(definition: ServableDefinition, version: int) -> tuple[int, str | None]:
    """Pick the version to load and its directory (``None`` when models are not files).

    A servable whose models are all in-memory (cells, callables) needs no version
    directory; it is version 1 unless its directory has version directories.
    """
    check_version_number(version)
    directory = definition.directory
    if directory is None:
        if version not in (0, 1):
            raise VersionNotFoundError(
                f"servable '{definition.name}' has no directory, so its only version is 1; "
                f"got version {version}"
            )
        return 1, None
    if definition.needs_files and not os.path.isdir(directory):
        raise LoadError(
            f"servable '{definition.name}': directory {directory!r} does not exist "
            f"(expected version directories 1/, 2/, ... holding the model files)"
        )
    versions = list_versions(directory)
    if not versions:
        if definition.needs_files:
            raise VersionNotFoundError(
                f"servable '{definition.name}': no version directory (1/, 2/, ...) in "
                f"{directory!r}, which its model files need"
            )
        if version not in (0, 1):
            raise VersionNotFoundError(
                f"servable '{definition.name}' has no version directories, so its only version "
                f"is 1; got version {version}"
            )
        return 1, None
    chosen = versions[-1] if version == 0 else version
    if chosen not in versions:
        raise VersionNotFoundError(
            f"servable '{definition.name}' has no version {version} in {directory!r}; available: {versions}"
        )
    return chosen, os.path.join(directory, str(chosen))


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
        on_error: Callable[[int | None, BaseException], object] | None = None,
    ) -> None:
        self.directory = directory
        self.poll_interval = poll_interval
        self._current = current
        self._load = load
        self._on_error = on_error
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

    @property
    def alive(self) -> bool:
        """Whether the watcher's thread is polling."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception as exc:  # never the watcher's end: log, report, poll again
                self._report(None, exc)

    def _report(self, version: int | None, exc: BaseException) -> None:
        which = "" if version is None else f" (version {version})"
        warn_event(
            logger,
            logging.ERROR,
            "watching %s%s failed: %s: %s",
            self.directory,
            which,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        if self._on_error is not None:
            try:
                self._on_error(version, exc)
            except Exception:
                logger.exception("reporting a watcher error failed")

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
        except MindServeError as exc:  # logged as a FAILED event, in the status; retried when it changes
            self._failed[newest] = now
            show_unconfigured(
                logger,
                logging.ERROR,
                f"watching {self.directory}: version {newest} failed to load (tried again when its files "
                f"change): {exc}",
            )
            return None
        except Exception as exc:  # unexpected: reported here; retried when it changes
            self._failed[newest] = now
            self._report(newest, exc)
            return None
        return newest

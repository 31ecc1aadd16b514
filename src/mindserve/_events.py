"""Version lifecycle events, and the listeners an application registers for them."""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Callable

import attrs

logger = logging.getLogger("mindserve")


@attrs.frozen
class VersionEvent:
    """Something happened to a version of a servable.

    ``kind``: ``"loaded"`` (loaded and warmed up, not yet serving), ``"swapped"`` (now the
    default version: new calls go to it), ``"unloaded"`` (stopped, its last call finished,
    its memory released to Python), or ``"failed"`` (it failed to load; ``error`` says why,
    and whatever was serving goes on).
    """

    kind: str
    servable: str
    version: int | None
    at: datetime.datetime
    error: BaseException | None = None


class EventHub:
    """Calls every listener with each event; a listener that raises is logged, never fatal."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[VersionEvent], None]] = []
        self._lock = threading.Lock()

    def add(self, listener: Callable[[VersionEvent], None]) -> None:
        if not callable(listener):
            raise TypeError(f"a listener must be callable; got {listener!r}")
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: Callable[[VersionEvent], None]) -> None:
        with self._lock:
            self._listeners.remove(listener)

    def emit(self, kind: str, servable: str, version: int | None, error: BaseException | None = None) -> None:
        event = VersionEvent(kind, servable, version, datetime.datetime.now(datetime.timezone.utc), error)
        if kind == "failed":
            logger.error("servable '%s' version %s failed to load: %s", servable, version, error)
        else:
            logger.info("servable '%s' version %s %s", servable, version, kind)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("a mindserve event listener raised on %s", event)

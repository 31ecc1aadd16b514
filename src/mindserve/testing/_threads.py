"""Finding the threads a runtime left running."""

from __future__ import annotations

import threading
import time

#: The one process-wide thread that watches every call's deadline; it outlives runtimes.
_SHARED = ("mindserve:deadlines",)


def mindserve_threads() -> set[threading.Thread]:
    """The live threads mindserve started (their names begin with ``mindserve``)."""
    return {t for t in threading.enumerate() if t.name.startswith("mindserve") and t.name not in _SHARED}


def leaked_threads(before: set[threading.Thread], timeout: float = 10.0) -> list[threading.Thread]:
    """mindserve's threads started since ``before`` was taken that are still alive after
    waiting up to ``timeout`` seconds for them to end (a closed runtime's threads end once
    their queues have drained)."""
    deadline = time.monotonic() + timeout
    left = []
    for thread in sorted(mindserve_threads() - before, key=lambda t: t.name):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread)
    return left

"""Finding the threads a runtime left running."""

from __future__ import annotations

import threading
import time

#: The process-wide threads that outlive runtimes: the one that watches every call's deadline,
#: and the one that keeps Python's Ctrl-C handling for a few seconds after a model's first runs.
_SHARED = ("mindserve:deadlines", "mindserve:sigint")


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

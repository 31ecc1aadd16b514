"""Taking a serving process's long-lived objects out of the garbage collector's walks
(docs/running.md, "Garbage-collection pauses")."""

from __future__ import annotations

import gc
import threading
import time

__all__ = ["freeze_gc"]

#: How long freeze_gc waits at most for another thread's collection to end.
_WAIT_FOR_OTHERS = 5.0


def freeze_gc() -> int:
    """Free what start-up left in reference cycles, then leave every object alive now out
    of the garbage collector's later walks (:func:`gc.freeze`); return how many that is.

    A process that has imported MindSpore and loaded a model holds about 170,000 objects
    that live as long as it does; each full collection walks them all, stalling every
    thread for 85-220 ms on a 2-core machine. Call this once serving is ready (after
    :meth:`Runtime.start`, in a web app's start-up) and again after a new version loaded.
    Each call first unfreezes what an earlier call froze, so its own full collection
    (one such stall, now) frees what an unloaded version left in cycles: calling it after
    every update leaks nothing. An object frozen that later becomes garbage in a cycle
    stays until the next call; objects freed by reference counting go at once, as always.

    It is the whole process's setting, so mindserve never does it by itself: call it in a
    long-running service, not in a notebook or a test suite that starts runtime after
    runtime.
    """
    gc.unfreeze()
    _collect_fully()
    gc.freeze()
    return gc.get_freeze_count()


def _collect_fully() -> None:
    """A full collection in this thread. Python skips ``gc.collect()`` while another thread
    is collecting (it returns 0 at once), so try again until this thread's own collection
    of the oldest generation has run (or ``_WAIT_FOR_OTHERS`` has passed)."""
    me = threading.get_ident()
    ran: list[bool] = []

    def stopped(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info.get("generation") == 2 and threading.get_ident() == me:
            ran.append(True)

    gc.callbacks.append(stopped)
    try:
        give_up = time.monotonic() + _WAIT_FOR_OTHERS
        gc.collect()
        while not ran and time.monotonic() < give_up:
            time.sleep(0.005)
            gc.collect()
    finally:
        gc.callbacks.remove(stopped)

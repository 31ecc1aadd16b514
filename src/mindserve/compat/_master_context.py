"""MindSpore Serving's ``server.master.context``: the limit of requests waiting at once.

The compat client counts its requests in flight; one over the limit gets MindSpore
Serving's reply ``{"error": "Serving Error: enqueued requests count exceeds the limit N"}``.
"""

from __future__ import annotations

import threading

from mindserve.compat._checks import check_int

__all__ = ["set_max_enqueued_requests"]

_lock = threading.Lock()
_limit = 10000
_enqueued = 0


def set_max_enqueued_requests(max_enqueued_requests: int) -> None:
    """Set how many requests may wait at once (default 10000); ``RuntimeError`` unless an
    int >= 1."""
    global _limit
    check_int("max_enqueued_requests", max_enqueued_requests, 1)
    _limit = max_enqueued_requests


def enter() -> str | None:
    """Count one more request in flight; the error to reply instead when over the limit."""
    global _enqueued
    with _lock:
        if _enqueued >= _limit:
            return f"Serving Error: enqueued requests count exceeds the limit {_limit}"
        _enqueued += 1
        return None


def leave() -> None:
    """A request is done."""
    global _enqueued
    with _lock:
        _enqueued -= 1

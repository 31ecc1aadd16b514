"""Waiting for a condition in tests, without sleeping a fixed time."""

import threading


def wait_until(condition, timeout=10.0):
    """Poll ``condition`` until it holds (failing after ``timeout`` seconds)."""
    done = threading.Event()
    for _ in range(int(timeout / 0.001)):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("condition never held")

"""Waiting for a condition in tests, without sleeping a fixed time."""

import threading
import time


def wait_until(condition, timeout=10.0):
    """Poll ``condition`` until it holds (failing after ``timeout`` seconds)."""
    done = threading.Event()
    for _ in range(int(timeout / 0.001)):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("condition never held")


def wait_for(condition, seconds=30.0):
    """Poll ``condition`` every 50 ms for up to ``seconds``; whether it held (for ``assert
    wait_for(...)`` on conditions that cost more to ask, such as a worker pool's status)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()

"""A small bounded pool for the stretches of work of ``infer_async`` calls.

A pending ``infer_async`` call holds no thread: each stretch between two waits (checking
its instances, per-instance stages, queueing on a model, building its results) is handed
here. Unlike a ``ThreadPoolExecutor`` it creates no future per task, and it wakes a worker
only when one sleeps: when an executor finishes a batch of 64 calls, their 64 stretches
join one queue that busy workers drain, with one or two wake-ups instead of 64.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable

from mindserve._calls import mark_service_thread

logger = logging.getLogger("mindserve")


class Dispatcher:
    """Runs callables on at most ``workers`` daemon threads, started when first needed."""

    def __init__(self, workers: int, name: str = "mindserve-async") -> None:
        self.workers = workers
        self.name = name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[Callable[[], None]] = deque()
        self._threads = 0
        self._idle = 0
        self._closed = False

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` soon on a worker; once closed, run it in this thread."""
        with self._lock:
            if not self._closed:
                self._queue.append(work)
                if self._idle:
                    self._cond.notify()
                elif self._threads < self.workers:
                    self._threads += 1
                    threading.Thread(
                        target=self._work, name=f"{self.name}#{self._threads}", daemon=True
                    ).start()
                return
        work()

    def close(self) -> None:
        """Run what is queued, then let the workers exit; later work runs in its caller."""
        with self._lock:
            self._closed = True
            self._cond.notify_all()

    def _work(self) -> None:
        mark_service_thread()
        queue = self._queue
        while True:
            with self._lock:
                while not queue:
                    if self._closed:
                        self._threads -= 1
                        return
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                work = queue.popleft()
            try:
                work()
            except BaseException:  # a stretch reports its own errors; nothing may kill a worker
                logger.exception("mindserve: an infer_async step raised")

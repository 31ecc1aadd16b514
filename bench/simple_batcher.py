"""The baseline: the simplest dynamic batcher one would write by hand.

One worker thread on a ``queue.Queue``; after the first request arrives it waits up to
``max_wait`` seconds for more, up to ``max_batch`` requests, runs them as one batch and
completes a ``concurrent.futures.Future`` per request.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np


class SimpleBatcher:
    def __init__(self, run_batch, max_batch: int = 64, max_wait: float = 0.002) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: queue.Queue = queue.Queue()
        self.batches = 0
        self.instances = 0
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def submit(self, x: np.ndarray) -> Future:
        future: Future = Future()
        self.queue.put((x, future))
        return future

    def close(self) -> None:
        self._stop = True
        self.queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self.queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self._stop = True
                    break
                batch.append(item)
            outputs = self.run_batch(np.stack([x for x, _ in batch]))
            self.batches += 1
            self.instances += len(batch)
            for (_, future), output in zip(batch, outputs):
                future.set_result(output)

"""Batching across callers: one queue and one executor per model (and per batched stage).

Callers submit their instances and wait on a :class:`Ticket`. The executor takes up to
``max_batch_size`` queued instances that can share a batch, across every pending request,
and runs them as one batch. Two rules keep latency low and the model safe:

* **A lone caller does not wait.** When the executor is idle and nothing is queued (and
  ``max_delay`` is 0), the submitting thread runs its own batch at once, instead of handing
  it to the executor thread: a hand-off costs about 60 us on this machine, a quarter of a
  batch-1 MLP call. While it runs, the scheduler is busy, so everything else queues.
* **One batch at a time.** The ``busy`` flag, taken under the queue's lock by whichever
  thread runs a batch, means no two threads are ever inside the model at once.

Instances whose request was cancelled or whose deadline passed are dropped when a batch
is formed, before they reach the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any, Callable

from mindserve._batching import split
from mindserve._errors import ModelError, OverloadedError, RuntimeClosedError
from mindserve._outcome import Failure, Outcome
from mindserve._waiting import Request, Ticket

#: Stands for "no limit" as a batch size (a batched stage with batch_size=0).
UNLIMITED = 1 << 62


class Item:
    """One instance waiting at one step."""

    __slots__ = ("index", "key", "request", "ticket", "value")

    def __init__(self, request: Request, ticket: Ticket, index: int, value: Any, key: Hashable) -> None:
        self.request = request
        self.ticket = ticket
        self.index = index
        self.value = value
        self.key = key


_DROPPED = Failure(ModelError, "dropped before running: the call was cancelled or timed out")


class Scheduler:
    """A queue and an executor thread running ``run_batch`` over batches of queued values.

    ``run_batch`` takes a list of values (at most ``max_batch_size``, all with one key)
    and returns one outcome per value; it must not raise.
    """

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[Any]], Sequence[Outcome]],
        *,
        max_batch_size: int,
        max_delay: float = 0.0,
        max_queue: int = 4096,
    ) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue = max_queue
        self.batches = 0
        self.instances = 0
        self._run_batch = run_batch
        self._cond = threading.Condition()
        self._queue: deque[Item] = deque()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"mindserve:{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<Scheduler {self.name} queued={len(self._queue)} busy={self._busy}>"

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(
        self,
        request: Request,
        values: Sequence[Any],
        keys: Sequence[Hashable] | None = None,
        inline: bool = True,
    ) -> Ticket:
        """Queue values; the returned ticket completes when they have run.

        With ``inline`` (the default), when the executor is idle and nothing is queued, the
        values run at once in the calling thread. An event loop passes ``inline=False`` so
        that it never blocks on a model.
        """
        ticket = Ticket(len(values))
        if not values:
            return ticket
        request.check(self.name)
        count = len(values)
        dead: list[Item] = []
        with self._cond:
            if self._closed:
                raise RuntimeClosedError(f"{self.name} was stopped before this call reached it")
            if self._queue and len(self._queue) + count > self.max_queue:
                self._purge(dead)
            if self._queue and len(self._queue) + count > self.max_queue:
                _drop(dead)
                raise OverloadedError(
                    f"{self.name}: the queue is full ({len(self._queue)} instances waiting, "
                    f"max_queue={self.max_queue}; this call brings {count}). "
                    f"Hint: retry later, or raise Batching(max_queue=...)"
                )
            inline = inline and not self._busy and not self._queue and self.max_delay == 0
            if inline:
                self._busy = True
            else:
                self._queue.extend(_items(request, ticket, values, keys))
                self._cond.notify()
        _drop(dead)
        if not inline:
            return ticket
        self._run_inline(request, ticket, values, keys)
        return ticket

    def close(self) -> None:
        """Stop after running what is queued; the executor thread then exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- executing -----------------------------------------------------------------

    def _run_inline(
        self, request: Request, ticket: Ticket, values: Sequence[Any], keys: Sequence[Hashable] | None
    ) -> None:
        """Run a caller's values in its own thread, batch by batch, while nobody else waits.

        If others queue up meanwhile, the rest goes behind them, to the executor.
        """
        batches = split(keys, len(values), self.max_batch_size)
        try:
            for position, indices in enumerate(batches):
                outcomes = self._run_batch_safely([values[i] for i in indices])
                self.batches += 1
                self.instances += len(indices)
                for i, outcome in zip(indices, outcomes):
                    ticket.outcomes[i] = outcome
                ticket.settled(len(indices))
                if position + 1 < len(batches):
                    with self._cond:
                        if self._queue:  # others wait: queue the rest behind them
                            rest = [i for later in batches[position + 1 :] for i in later]
                            self._queue.extend(_items(request, ticket, values, keys, rest))
                            break
        finally:
            self._idle()

    def _idle(self) -> None:
        """The calling thread is done running batches; hand over to the executor if needed."""
        with self._cond:
            self._busy = False
            if self._queue or self._closed:  # waking an idle executor costs ~60 us
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            dead: list[Item] = []
            with self._cond:
                while self._busy or (not self._queue and not self._closed):
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                self._busy = True
                batch = self._form(dead)
                if self.max_delay and len(batch) < self.max_batch_size:
                    ready_by = time.monotonic() + self.max_delay
                    while len(batch) < self.max_batch_size and not self._closed:
                        left = ready_by - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                        batch += self._form(dead, batch[0].key if batch else None, len(batch))
            try:
                _drop(dead)
                if batch:
                    self._execute(batch)
            finally:
                with self._cond:
                    self._busy = False

    def _purge(self, dead: list[Item]) -> None:
        """Move the items of cancelled or timed-out calls out of the queue into ``dead``."""
        now = time.monotonic()
        live: deque[Item] = deque()
        for item in self._queue:
            (dead if item.request.expired(now) else live).append(item)
        self._queue = live

    def _form(self, dead: list[Item], key: Hashable = None, have: int = 0) -> list[Item]:
        """Pop up to the batch limit of live items sharing one key; collect dead ones."""
        now = time.monotonic()
        batch: list[Item] = []
        skipped: list[Item] = []
        queue = self._queue
        while queue and have + len(batch) < self.max_batch_size:
            item = queue.popleft()
            if item.request.expired(now):
                dead.append(item)
            elif not batch and not have:
                key = item.key
                batch.append(item)
            elif item.key == key:
                batch.append(item)
            else:
                skipped.append(item)
        queue.extendleft(reversed(skipped))
        return batch

    def _run_batch_safely(self, values: list[Any]) -> Sequence[Outcome]:
        try:
            return self._run_batch(values)
        except Exception as exc:  # run_batch should not raise; never lose an item
            failure = Failure(ModelError, f"{self.name} failed: {type(exc).__name__}: {exc}", exc)
            return [failure] * len(values)

    def _execute(self, batch: list[Item]) -> None:
        outcomes = self._run_batch_safely([item.value for item in batch])
        self.batches += 1
        self.instances += len(batch)
        settled: dict[Ticket, int] = {}
        for item, outcome in zip(batch, outcomes):
            item.ticket.outcomes[item.index] = outcome
            settled[item.ticket] = settled.get(item.ticket, 0) + 1
        for ticket, count in settled.items():
            ticket.settled(count)


def _drop(dead: list[Item]) -> None:
    """Complete the items of calls that gave up, without running them."""
    for item in dead:
        item.ticket.resolve(item.index, _DROPPED)


def _items(
    request: Request,
    ticket: Ticket,
    values: Sequence[Any],
    keys: Sequence[Hashable] | None,
    indices: Sequence[int] | None = None,
) -> list[Item]:
    """Queue items for ``values`` (only those at ``indices``, if given)."""
    chosen = range(len(values)) if indices is None else indices
    if keys is None:
        return [Item(request, ticket, i, values[i], None) for i in chosen]
    return [Item(request, ticket, i, values[i], keys[i]) for i in chosen]

"""Batching across callers: one queue per model (and per batched stage), N batches at a time.

Callers submit their instances and wait on a :class:`Ticket`. An executor thread takes
up to ``max_batch_size`` queued instances that can share a batch, across every pending
request, and runs them as one batch. The scheduler has ``capacity`` slots: at most that
many batches run at once (1 for an in-process MindSpore model, which must never be
entered by two threads; one per worker process later). Rules that keep latency low and
the model safe:

* **A lone caller does not wait.** When a slot is free and nothing is queued (and
  ``max_delay`` is 0), the submitting thread runs its own batch at once instead of
  handing it to an executor thread: a hand-off costs about 60 us on this machine, a
  quarter of a batch-1 MLP call. While it runs, it holds a slot.
* **No batch outside a slot.** A slot is taken under the queue's lock by whichever thread
  runs a batch, so no more than ``capacity`` threads are ever inside the model.
* **Nothing kills an executor.** Whatever a batch raises (a ``BaseException`` included)
  fails that batch's instances; the executor goes on serving.

Instances whose request was cancelled or whose deadline passed are dropped when a batch
is formed, before they reach the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any, Callable

from mindserve._batching.accounting import BatchAccounting
from mindserve._batching.handoff import gathering
from mindserve._batching.shapes import split
from mindserve._calls import Request, dropped, in_caller_thread, mark_executor_thread
from mindserve._errors import ModelError, OverloadedError, RuntimeClosedError, counted, describe
from mindserve._observe.observer import BatchReason, DropReason, ObserverHub, Step
from mindserve._outcomes import Abandoned, Failure, Outcome
from mindserve._tickets import Ticket

logger = logging.getLogger("mindserve")

#: Stands for "no limit" as a batch size (a batched stage with batch_size=0).
UNLIMITED = 1 << 62

#: ``run_batch(values, requests)``: one outcome per value; it should not raise.
RunBatch = Callable[[list[Any], list[Request]], Sequence[Outcome]]


class Item:
    """One instance waiting at one step."""

    __slots__ = ("index", "key", "queued_at", "request", "ticket", "value")

    def __init__(
        self, request: Request, ticket: Ticket, index: int, value: Any, key: Hashable, queued_at: float
    ) -> None:
        self.request = request
        self.ticket = ticket
        self.index = index
        self.value = value
        self.key = key
        self.queued_at = queued_at


class Scheduler(BatchAccounting):
    """A queue and ``capacity`` executor threads running ``run_batch`` over batches (what
    it tells of them: :class:`BatchAccounting`)."""

    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_delay: float = 0.0,
        refill_wait: float = 0.0,
        max_queue: int = 4096,
        capacity: int = 1,
        observer: ObserverHub | None = None,
        padded: Callable[[int], int] | None = None,
        what: str | None = None,
        on_drained: Callable[[], None] | None = None,
        step: Step | None = None,
        elements: Callable[[Sequence[Any]], tuple[int, int]] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"a scheduler needs a capacity >= 1; got {capacity}")
        super().__init__(name, observer, step, padded, elements)
        #: How errors handed to callers name this step (they add the servable and version).
        self.what = what or name
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.refill_wait = refill_wait
        self.max_queue = max_queue
        self.capacity = capacity
        self._run_batch = run_batch
        # Hot paths take the lock itself (a C call); the condition shares it for waits.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[Item] = deque()
        self._free = capacity
        self._closed = False
        #: The last batch: its instances, its distinct calls, when it ended. Under steady
        #: load from several callers, about as many instances come back at once.
        self._last_size = 0
        self._last_calls = 0
        self._last_end = 0.0
        #: Wake a waiting executor once this many instances are queued (1: at any arrival).
        self._wake_at = 1
        #: Called once, by the last executor thread to exit after close().
        self._on_drained = on_drained
        #: The executor threads, started when an instance is first queued (or at close): a
        #: queue only ever run inline (a lone caller's, a worker process's) starts none.
        self._threads: list[threading.Thread] = []
        self._threads_left = 0

    def __repr__(self) -> str:
        return f"<Scheduler {self.name} queued={len(self._queue)} running={self.capacity - self._free}>"

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        """How many batches run now."""
        return self.capacity - self._free

    def submit(
        self,
        request: Request,
        values: Sequence[Any],
        keys: Sequence[Hashable] | None = None,
        inline: bool = True,
    ) -> Ticket:
        """Queue values; the returned ticket completes when they have run.

        With ``inline`` (the default), when a slot is free and nothing is queued, the
        values run at once in the calling thread. An event loop passes ``inline=False`` so
        that it never blocks on a model.
        """
        ticket = Ticket(len(values))
        if not values:
            return ticket
        request.check(self.what)
        count = len(values)
        dead: list[Item] = []
        waiting = 0  # instances that leave no room for this call
        with self._lock:
            if self._closed:
                raise RuntimeClosedError(f"{self.what} was stopped before this call reached it")
            if self._queue and len(self._queue) + count > self.max_queue:
                self._purge(dead)
            if self._queue and len(self._queue) + count > self.max_queue:
                waiting = len(self._queue)
            inline = (
                not waiting
                and inline
                and self._free > 0
                and not self._queue
                and self.max_delay == 0
                and self._idle_enough()
            )
            if inline:
                self._free -= 1
            elif not waiting:
                if not self._threads:
                    self._start_threads()
                self._queue.extend(_items(request, ticket, values, keys, time.monotonic()))
                if len(self._queue) >= self._wake_at:
                    self._cond.notify()
        self._drop(dead)  # outside the lock: waking a caller may run its next step here
        if waiting:
            self._report_drop(count, DropReason.OVERLOADED)
            raise OverloadedError(
                f"{self.what}: the queue is full ({counted(waiting, 'instance')} waiting, "
                f"max_queue={self.max_queue}; this call brings {count}). "
                f"Hint: retry later, or raise Batching(max_queue=...)"
            )
        if inline:
            self._run_inline(request, ticket, values, keys)
        return ticket

    def close(self) -> None:
        """Stop after running what is queued; the executor threads then exit (the last
        one calls ``on_drained``, once no batch runs any more)."""
        with self._lock:
            self._closed = True
            if not self._threads:
                self._start_threads()
            self._cond.notify_all()

    def _start_threads(self) -> None:
        """Start the executor threads (the caller holds the lock)."""
        self._threads = [
            threading.Thread(target=self._loop, name=f"mindserve:{self.name}#{n}", daemon=True)
            for n in range(self.capacity)
        ]
        self._threads_left = self.capacity
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        """Whether any executor thread still runs."""
        return any(thread.is_alive() for thread in self._threads)

    # -- executing -----------------------------------------------------------------

    def _run_inline(
        self, request: Request, ticket: Ticket, values: Sequence[Any], keys: Sequence[Hashable] | None
    ) -> None:
        """Run a caller's values in its own thread, batch by batch, while nobody else waits.

        If others queue up meanwhile, the rest goes behind them, to the executors. A
        ``KeyboardInterrupt`` raised here (the caller's own thread) still reaches the
        caller, once every instance has an outcome.
        """
        batches = [[0]] if len(values) == 1 else split(keys, len(values), self.max_batch_size)
        interrupt: BaseException | None = None
        try:
            for position, indices in enumerate(batches):
                batch = [values[i] for i in indices]
                started = time.monotonic()
                outcomes, interrupt = self._run_safely(batch, [request] * len(batch))
                self._count(
                    len(indices), BatchReason.INLINE, started, started, outcomes, 0, (request,), batch
                )
                self._last_size, self._last_calls, self._last_end = len(batch), 1, time.monotonic()
                for i, outcome in zip(indices, outcomes):
                    ticket.outcomes[i] = outcome
                ticket.settled(len(indices))
                if interrupt is not None:
                    rest = [i for later in batches[position + 1 :] for i in later]
                    for i in rest:
                        ticket.resolve(i, _interrupted(interrupt))
                    break
                if position + 1 < len(batches):
                    with self._lock:
                        if self._queue:  # others wait: queue the rest behind them
                            rest = [i for later in batches[position + 1 :] for i in later]
                            now = time.monotonic()
                            self._queue.extend(_items(request, ticket, values, keys, now, rest))
                            break
        finally:
            self._release()
        if interrupt is not None:
            raise interrupt

    def _idle_enough(self) -> bool:
        """Whether a caller may run its batch inline now: the last batch served one call (a
        lone caller), or it ended more than ``refill_wait`` ago. Otherwise several callers
        are active, and their instances should meet in the executor's next batch."""
        return (
            self._last_calls <= 1
            or not self.refill_wait
            or time.monotonic() - self._last_end > self.refill_wait
        )

    def _release(self) -> None:
        """A thread is done running a batch: free its slot, and wake an executor if needed."""
        with self._lock:
            self._free += 1
            if self._queue or self._closed:  # waking an idle executor costs ~60 us
                self._cond.notify()

    def _loop(self) -> None:
        mark_executor_thread()
        while True:
            try:
                if not self._serve_one():
                    break
            except BaseException:  # pragma: no cover - _serve_one settles everything it takes
                continue
        with self._lock:
            self._threads_left -= 1
            last = self._threads_left == 0
        if last and self._on_drained is not None:
            try:
                self._on_drained()
            except BaseException:
                logger.exception("mindserve: releasing %s after it drained failed", self.name)

    def _serve_one(self) -> bool:
        """Wait for work, run one batch in a slot; False once closed and drained."""
        dead: list[Item] = []
        with self._lock:
            while self._free == 0 or (not self._queue and not self._closed):
                self._cond.wait()
            if not self._queue:
                self._cond.notify()  # let the other executors see the close too
                return False
            self._free -= 1
            batch = self._form(dead)
            reason = BatchReason.FULL if len(batch) >= self.max_batch_size else BatchReason.QUEUE_EMPTY
            if self._closed:
                reason = BatchReason.CLOSING
            elif self.max_delay and len(batch) < self.max_batch_size:
                reason = self._linger(batch, dead, self.max_batch_size, self.max_delay, BatchReason.DELAY)
            elif self.refill_wait and self._last_calls > 1 and len(batch) < self._last_size:
                target = min(self._last_size, self.max_batch_size)
                reason = self._linger(batch, dead, target, self.refill_wait, BatchReason.REFILL)
            queued = len(self._queue)
            if queued and self._free:
                self._cond.notify()  # another slot can take the rest
        try:
            self._drop(dead)
            if batch:
                self._execute(batch, reason, queued)
        finally:
            self._release()
        return True

    def _linger(
        self, batch: list[Item], dead: list[Item], target: int, seconds: float, late: BatchReason
    ) -> BatchReason:
        """Wait up to ``seconds`` (holding the lock between waits) for ``target`` instances.

        Arrivals wake this thread only once enough are queued to reach the target, so
        that callers being woken and resubmitting do not wake it one by one.
        """
        ready_by = time.monotonic() + seconds
        try:
            while len(batch) < target and not self._closed:
                left = ready_by - time.monotonic()
                if left <= 0:
                    return late
                # What is queued now cannot join (another key, or nothing): wait for
                # enough new arrivals. The wait releases the lock, so callers can queue.
                self._wake_at = len(self._queue) + target - len(batch)
                self._cond.wait(left)
                batch += self._form(dead, batch[0].key if batch else None, len(batch))
        finally:
            self._wake_at = 1
        if self._closed and len(batch) < target:
            return BatchReason.CLOSING
        return BatchReason.FULL if len(batch) >= self.max_batch_size else BatchReason.REFILLED

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
        limit = self.max_batch_size - have
        while queue and len(batch) < limit:
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
        if skipped:
            queue.extendleft(reversed(skipped))
        return batch

    def _run_safely(
        self, values: list[Any], requests: list[Request]
    ) -> tuple[Sequence[Outcome], BaseException | None]:
        """Run a batch; whatever it raises fails its instances (never the thread).

        Returns the outcomes, and a ``KeyboardInterrupt`` to re-raise when this is the
        caller's own thread.
        """
        try:
            outcomes = self._run_batch(values, requests)
            if len(outcomes) == len(values):
                return outcomes, None
            detail = f"{self.what} returned {len(outcomes)} outcomes for {len(values)} instances"
            return [Failure(ModelError, detail)] * len(values), None
        except BaseException as exc:  # run_batch should not raise; never lose an item
            failure = Failure(ModelError, f"{self.what} failed: {describe(exc)}", exc)
            return [failure] * len(values), exc if in_caller_thread(exc) else None

    def _execute(self, batch: list[Item], reason: BatchReason, queued: int) -> None:
        started = time.monotonic()
        requests = [item.request for item in batch]
        values = [item.value for item in batch]
        outcomes, _ = self._run_safely(values, requests)
        self._count(len(batch), reason, batch[0].queued_at, started, outcomes, queued, requests, values)
        settled: dict[Ticket, int] = {}
        for item, outcome in zip(batch, outcomes):
            item.ticket.outcomes[item.index] = outcome
            settled[item.ticket] = settled.get(item.ticket, 0) + 1
        self._last_size, self._last_calls, self._last_end = len(batch), len(settled), time.monotonic()
        with gathering():  # the futures' done-callbacks go to their pool as one task
            Ticket.wake_chain(
                [ticket for ticket, count in settled.items() if ticket.settled(count, wake=False)]
            )

    def _drop(self, dead: list[Item]) -> None:
        """Complete the items of calls that gave up, without running them."""
        if not dead:
            return
        by_reason: dict[DropReason, int] = {}
        for item in dead:
            reason = DropReason((item.request.abandoned or Abandoned.DEADLINE).value)
            item.ticket.resolve(item.index, dropped(item.request))
            by_reason[reason] = by_reason.get(reason, 0) + 1
        for reason, count in by_reason.items():
            self._report_drop(count, reason)


def _interrupted(exc: BaseException) -> Failure:
    return Failure(ModelError, f"not run: the caller was interrupted ({type(exc).__name__})", exc)


def _items(
    request: Request,
    ticket: Ticket,
    values: Sequence[Any],
    keys: Sequence[Hashable] | None,
    now: float,
    indices: Sequence[int] | None = None,
) -> list[Item]:
    """Queue items for ``values`` (only those at ``indices``, if given)."""
    chosen = range(len(values)) if indices is None else indices
    if keys is None:
        return [Item(request, ticket, i, values[i], None, now) for i in chosen]
    return [Item(request, ticket, i, values[i], keys[i], now) for i in chosen]

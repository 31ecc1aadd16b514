"""One call in flight: its request, and the steps it waits on.

* :class:`Request` is one call: its deadline, and whether its caller gave up on it; it
  waits for a step's :class:`~mindserve._tickets.Ticket` in its thread
  (:meth:`Request.finish`) or on an event loop (:meth:`Request.finish_async`).
* A :class:`Pending` step pairs a ticket with how to turn its outcomes into the step's.
* :data:`ALARM` abandons the calls whose deadline passes while nobody blocks on them.
* The thread marks tell mindserve's own threads from its callers'.

What a step gives back per instance is in :mod:`mindserve._outcomes`; the step context a
stage's ``Model.call`` reads, in :mod:`mindserve._context`.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import threading
import time
from collections.abc import Sequence
from typing import Callable

from mindserve._errors import (
    ArgumentTypeError,
    DeadlineExceededError,
    InvalidArgumentError,
    ModelError,
    RuntimeClosedError,
)
from mindserve._outcomes import Abandoned, Failure, Outcome
from mindserve._tickets import Ticket, mailbox_of

#: A timeout this long or longer (``inf`` included) means no deadline: the platform's waits
#: cannot wait longer (``threading.TIMEOUT_MAX``), and a year is already for ever.
_ENDLESS = min(threading.TIMEOUT_MAX, 365 * 24 * 3600.0)


_service = threading.local()


def mark_service_thread() -> None:
    """Mark this thread as mindserve's own (a scheduler's executor, an async-call pool thread)."""
    _service.active = True


def mark_executor_thread() -> None:
    """Mark this thread as one that must never run user code: a scheduler's executor, the
    deadline alarm (a blocked executor stalls a model; a blocked alarm, every deadline)."""
    mark_service_thread()
    _service.executor = True


def in_executor_thread() -> bool:
    return getattr(_service, "executor", False)


def in_caller_thread(exc: BaseException) -> bool:
    """Whether ``exc`` must reach the caller as it is: a ``KeyboardInterrupt`` in a caller's
    own thread. Anything else, and anything in mindserve's threads, becomes an instance
    failure."""
    return isinstance(exc, KeyboardInterrupt) and not getattr(_service, "active", False)


_request_ids = itertools.count(1)


def _seconds(timeout: object) -> float:
    """A timeout that is a number of another kind (``numpy.float32``, ``numpy.int64``), as
    a float; anything else raises :class:`ArgumentTypeError`."""
    import numbers

    if isinstance(timeout, numbers.Real) and not isinstance(timeout, bool):
        return float(timeout)
    raise ArgumentTypeError(f"timeout must be a number of seconds or None; got {timeout!r}")


class Request:
    """One call's deadline, and whether its caller has given up on it."""

    __slots__ = (
        "_tickets",
        "abandoned",
        "abandoned_at",
        "deadline",
        "id",
        "on_abandon",
        "started",
        "timeout",
    )

    def __init__(self, timeout: float | None = None) -> None:
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            timeout = _seconds(timeout)
        if timeout is not None and not timeout >= 0:  # negative, or NaN
            raise InvalidArgumentError(f"timeout must be a number of seconds >= 0 or None; got {timeout!r}")
        self.timeout = timeout
        self.started = time.monotonic()
        #: Unique in this process: names the call in observers' reports (``CallReport.call``,
        #: ``BatchReport.calls``).
        self.id = next(_request_ids)
        if timeout is not None and timeout >= _ENDLESS:  # inf, or longer than a wait can be
            timeout = None
        self.deadline = None if timeout is None else self.started + timeout
        #: Why the call stopped waiting, or None; and when.
        self.abandoned: Abandoned | None = None
        self.abandoned_at: float | None = None
        #: The tickets waited on for this call now (a stage's ``Model.call`` waits inside the
        #: caller's wait), so that giving up can wake every one of them.
        self._tickets: list[Ticket] = []
        #: Called (in the thread giving up) each time the call is abandoned: lets a call
        #: whose work runs where no ticket waits (a per-instance stage on a pool) end at once.
        self.on_abandon: Callable[[], None] | None = None

    @classmethod
    def covering(cls, requests: Sequence[Request]) -> Request:
        """The request itself if all are one; else a new one whose deadline is the latest of
        theirs (none if any has none): work done for all of them, such as a batched stage."""
        first = requests[0]
        if all(r is first for r in requests):
            return first
        remaining = [r.remaining() for r in requests]
        timeout = None if None in remaining else max(0.0, max(remaining))  # type: ignore[type-var]
        return cls(timeout)

    def abandon(self, reason: Abandoned) -> None:
        """Give up: queued instances of this request will be dropped."""
        if self.abandoned is None:
            self.abandoned_at = time.monotonic()
        self.abandoned = reason
        for ticket in list(self._tickets):
            ticket.release()
        if self.on_abandon is not None:
            self.on_abandon()

    def watch(self, ticket: Ticket) -> None:
        """This call now waits on ``ticket``: giving up will wake it (at once if it gave up)."""
        self._tickets.append(ticket)
        if self.abandoned is not None:
            ticket.release()

    def unwatch(self, ticket: Ticket) -> None:
        try:
            self._tickets.remove(ticket)
        except ValueError:
            pass

    def expired(self, now: float) -> bool:
        return self.abandoned is not None or (self.deadline is not None and now >= self.deadline)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self, what: str) -> None:
        """Raise now if the deadline has passed or the caller gave up (before queueing more)."""
        if self.expired(time.monotonic()):
            self._give_up(what)

    def _give_up(self, what: str) -> None:
        """Raise the error that says why this call stops: deadline, closed, or cancelled."""
        if self.abandoned is None:
            self.abandon(Abandoned.DEADLINE)
        if self.abandoned is Abandoned.DEADLINE:
            raise DeadlineExceededError(f"{what}: the call's timeout of {self.timeout} s passed")
        if self.abandoned is Abandoned.CLOSED:
            raise _closed(what)
        raise CancelledCall(what)

    def finish(self, pending: Pending) -> list[Outcome]:
        """Wait for a pending step in this thread and return its outcomes."""
        return pending.finish(self.wait(pending.ticket, pending.what))

    async def finish_async(self, pending: Pending) -> list[Outcome]:
        """Await a pending step without blocking the event loop; return its outcomes."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        pending.ticket.on_done(functools.partial(mailbox_of(loop).post, future))
        self.watch(pending.ticket)
        try:
            await asyncio.wait_for(future, self.remaining())
        except asyncio.TimeoutError:
            pass  # the deadline: reported below, without the TimeoutError as its context
        except asyncio.CancelledError:
            self.abandon(Abandoned.CANCELLED)
            raise
        finally:
            self.unwatch(pending.ticket)
        return self.collect(pending)

    def collect(self, pending: Pending) -> list[Outcome]:
        """The outcomes of a step whose ticket was released; raise if it was released because
        the deadline passed or the call was cancelled or closed."""
        self.unwatch(pending.ticket)
        if not pending.ticket.done or self._dropped(pending.ticket.outcomes):  # type: ignore[arg-type]
            self._give_up(pending.what)
        return pending.finish(pending.ticket.outcomes)  # type: ignore[arg-type]

    def wait(self, ticket: Ticket, what: str) -> list[Outcome]:
        """Wait for ``ticket``; raise if the deadline passes or the call is cancelled first."""
        self.watch(ticket)
        try:
            if self.abandoned is None:
                ticket.wait(self.remaining())
        finally:
            self.unwatch(ticket)
        if not ticket.done or self._dropped(ticket.outcomes):  # type: ignore[arg-type]
            self._give_up(what)
        return ticket.outcomes  # type: ignore[return-value]

    def _dropped(self, outcomes: Sequence[Outcome]) -> bool:
        """Whether this call gave up and some of its instances were dropped for it (the
        call then ends with why it gave up, not with instance errors)."""
        return (
            self.abandoned is not None or (self.deadline is not None and time.monotonic() >= self.deadline)
        ) and any(isinstance(o, Failure) and o.dropped for o in outcomes)


def dropped(request: Request) -> Failure:
    """The outcome of an instance not run because its call gave up."""
    return Failure(
        ModelError,
        f"dropped before running: the call was {(request.abandoned or Abandoned.DEADLINE).value}",
        dropped=True,
    )


class Pending:
    """A step waiting on a scheduler: its ticket, and how to turn the ticket's outcomes
    into the step's outcomes (adding the instances that failed before being queued)."""

    __slots__ = ("finish", "ticket", "what")

    def __init__(
        self, ticket: Ticket, what: str, finish: Callable[[list[Outcome]], list[Outcome]] | None = None
    ) -> None:
        self.ticket = ticket
        self.what = what
        self.finish = finish or _unchanged


def _unchanged(outcomes: list[Outcome]) -> list[Outcome]:
    return outcomes


def _closed(what: str) -> RuntimeClosedError:
    return RuntimeClosedError(f"{what}: the runtime was closed before this call completed")


class CancelledCall(Exception):
    """Internal: the caller cancelled its future; nobody is waiting for the result."""


class Alarm:
    """Abandons requests whose deadline passes while nobody blocks on them (``infer_async``).

    One daemon thread for the whole process, sleeping until the earliest deadline.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Request]] = []
        self._count = 0
        self._thread: threading.Thread | None = None

    def watch(self, request: Request) -> None:
        if request.deadline is None:
            return
        with self._cond:
            self._count += 1
            heapq.heappush(self._heap, (request.deadline, self._count, request))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mindserve:deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is request:
                self._cond.notify()

    def _run(self) -> None:
        mark_executor_thread()
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, request = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
            if request.abandoned is None:
                request.abandon(Abandoned.DEADLINE)


#: The process's one alarm.
ALARM = Alarm()

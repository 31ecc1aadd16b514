"""Waking a call's waiter once its instances at one step all have an outcome.

A :class:`Ticket` is waited on in the caller's thread (chained wake-ups: one waiter runs
at a time), or completes a callback (``infer_async``); an event loop's waiters are woken
through its mailbox (:func:`mailbox_of`), once per burst of completed tickets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import Callable

from mindserve._outcomes import Outcome

logger = logging.getLogger("mindserve")


class Ticket:
    """One request's instances at one step; complete when every instance has an outcome.

    Tickets completed by one batch are woken in a chain: the executor wakes the first, and
    each waiter blocked in :meth:`wait` wakes the next as soon as it runs. Waking 64
    blocked threads at once would make them all fight for the GIL and the CPU while the
    next batch runs; a chain keeps one or two of them runnable at a time. A ticket whose
    waiter is not blocked (a callback, a waiter that gave up) passes the chain on at once.
    """

    __slots__ = ("_callback", "_counter", "_done", "_next", "_pending", "_released", "_waiting", "outcomes")

    def __init__(self, count: int) -> None:
        self.outcomes: list[Outcome | None] = [None] * count
        self._pending = count
        self._counter = threading.Lock()
        self._done = threading.Lock()
        self._done.acquire()
        self._released = False
        self._waiting = False
        self._next: Ticket | None = None
        self._callback: Callable[[], None] | None = None
        if count == 0:
            self.release()

    @property
    def done(self) -> bool:
        return self._pending == 0

    def resolve(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        self.settled(1)

    def settled(self, count: int, wake: bool = True) -> bool:
        """``count`` more outcomes have been written into ``outcomes``; return whether the
        ticket is complete. ``wake=False`` leaves waking it to the caller (a chain)."""
        with self._counter:
            self._pending -= count
            finished = self._pending == 0
        if finished and wake:
            self.release()
        return finished

    @staticmethod
    def wake_chain(tickets: list[Ticket]) -> None:
        """Wake complete tickets one after another (see the class docstring)."""
        for ticket, following in zip(tickets, tickets[1:]):
            ticket._next = following
        if tickets:
            tickets[0].release()

    def release(self) -> None:
        """Wake the waiter (once), and pass the chain on unless a blocked waiter will."""
        ticket: Ticket | None = self
        while ticket is not None:
            ticket = ticket._release_one()

    def _release_one(self) -> Ticket | None:
        with self._counter:
            first = not self._released
            self._released = True
            callback = self._callback if first else None
            self._callback = None  # the callback may hold the ticket: no cycle for the GC
            if first and self._waiting:
                following = None  # the woken waiter passes it on
            else:
                following, self._next = self._next, None
        if first:
            self._done.release()
            if callback is not None:
                _call_safely(callback)
        return following

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) when the waiter is woken; at once if it was."""
        with self._counter:
            released = self._released
            if not released:
                self._callback = callback
        if released:
            _call_safely(callback)

    def wait(self, timeout: float | None) -> None:
        with self._counter:
            if self._released or self._pending == 0:
                return
            self._waiting = True
        try:
            if timeout is None:
                self._done.acquire()
            elif timeout > 0:
                self._done.acquire(timeout=timeout)
        finally:
            with self._counter:
                self._waiting = False
                following = None
                if self._released:
                    following, self._next = self._next, None
            if following is not None:
                following.release()


def _call_safely(callback: Callable[[], None]) -> None:
    """Run a waiter's wake-up; whatever it raises must not reach the thread that settled the
    ticket (a scheduler's executor)."""
    try:
        callback()
    except BaseException:
        logger.exception("mindserve: a wake-up callback raised")


class _Mailbox:
    """Completes futures of one event loop from other threads, waking the loop once per burst.

    An executor finishing a batch of 64 single-instance calls would otherwise wake the
    loop 64 times (a system call each).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._futures: list[asyncio.Future[None]] = []

    def post(self, future: asyncio.Future[None]) -> None:
        with self._lock:
            self._futures.append(future)
            first = len(self._futures) == 1
        if first:
            try:
                self.loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _deliver(self) -> None:
        with self._lock:
            futures, self._futures = self._futures, []
        for future in futures:
            if not future.done():
                future.set_result(None)


_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = weakref.WeakKeyDictionary()
_mailboxes_lock = threading.Lock()


def mailbox_of(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    mailbox = _mailboxes.get(loop)
    if mailbox is None:
        with _mailboxes_lock:
            mailbox = _mailboxes.setdefault(loop, _Mailbox(loop))
    return mailbox

"""Handing the user code one batch triggered to a pool as one task.

When a batch of ``infer_async`` calls completes, the scheduler's thread completes their
futures, and each future's done-callbacks (user code) must run elsewhere: a callback may
block, or call the runtime. Handed to the pool one by one, a batch of 64 calls wakes up to
64 pool threads that fight for the GIL, and the scheduler's thread, back in the model,
must win the GIL from all of them to return. So while a scheduler's thread wakes the calls
of one batch, :func:`hand_off` gathers that work, and the end of the batch sends it to the
pool as one task: one thread runs the callbacks in order while the model runs the next
batch. Every future of the batch is complete before any of its callbacks runs, so a
callback that waits for another future of the same batch finds it done.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from typing import Callable

logger = logging.getLogger("mindserve")

#: How a pool takes work (``Dispatcher.submit``).
Submit = Callable[[Callable[[], None]], None]


class _Gathered(threading.local):
    #: The work gathered while this thread wakes a batch's calls, else None.
    work: list[tuple[Submit, Callable[[], None]]] | None = None


_gathered = _Gathered()


@contextlib.contextmanager
def gathering() -> Iterator[None]:
    """While this thread wakes the calls of one batch, :func:`hand_off` gathers; the end
    sends what was gathered to each pool as one task."""
    if _gathered.work is not None:  # already gathering: the outer batch sends
        yield
        return
    work: list[tuple[Submit, Callable[[], None]]] = []
    _gathered.work = work
    try:
        yield
    finally:
        _gathered.work = None
        by_pool: dict[Submit, list[Callable[[], None]]] = {}
        for submit, one in work:
            by_pool.setdefault(submit, []).append(one)
        work.clear()
        for submit, tasks in by_pool.items():
            submit(functools.partial(_run_in_order, tasks))


def hand_off(submit: Submit, work: Callable[[], None]) -> bool:
    """Gather ``work`` for ``submit``'s pool if this thread is waking a batch; False (and
    nothing done) otherwise."""
    gathered = _gathered.work
    if gathered is None:
        return False
    gathered.append((submit, work))
    return True


def _run_in_order(tasks: list[Callable[[], None]]) -> None:
    """Run the tasks in order, letting go of each once it ran: a completed call is then
    freed before the next callback allocates another (one batch's calls, all alive at once,
    would otherwise set off a garbage collection per batch)."""
    tasks.reverse()
    while tasks:
        task = tasks.pop()
        try:
            task()
        except BaseException:  # each reports its own errors; nothing may stop the others
            logger.exception("mindserve: a done-callback handed to the pool raised")
        del task

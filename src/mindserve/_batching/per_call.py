"""A scheduler whose batches do not depend on timing, for tests (``mindserve.testing``).

The batching :class:`~mindserve._batching.scheduler.Scheduler` forms a batch from whatever
is queued when a slot frees up, lets a lone caller run at once in its own thread, and may
wait ``max_delay`` or ``refill_wait`` for more instances: which instances share a batch then
depends on when threads run. :class:`PerCallScheduler` keeps the same queue, slots and
error handling, with three rules changed so that batch composition is a function of each
call's instances alone:

* a batch holds instances of one call (one submission) only, never another caller's;
* the instances of a call are grouped in their order, by batch key (dtype and shape), into
  batches of up to ``max_batch_size``, exactly as the executor forms batches from a queue;
* nothing waits on a clock (``max_delay`` and ``refill_wait`` are 0) and nothing runs in
  the caller's thread: every batch goes through the queue.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from mindserve._batching.scheduler import Scheduler
from mindserve._calls import Request
from mindserve._tickets import Ticket


class _Call:
    """Stands for one submission in the batch keys (compared by identity)."""

    __slots__ = ()


class PerCallScheduler(Scheduler):
    """A :class:`Scheduler` that batches each call's instances on their own."""

    def __init__(self, name: str, run_batch: Any, **options: Any) -> None:
        options.update(max_delay=0.0, refill_wait=0.0)
        super().__init__(name, run_batch, **options)

    def submit(
        self,
        request: Request,
        values: Sequence[Any],
        keys: Sequence[Hashable] | None = None,
        inline: bool = True,
    ) -> Ticket:
        call = _Call()
        own = [(call, key) for key in keys] if keys is not None else [(call, None)] * len(values)
        return super().submit(request, values, own, inline=False)

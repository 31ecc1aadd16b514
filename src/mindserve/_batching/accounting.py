"""What a scheduler tells of its batches and drops: its own counts, the runtime's metrics
(counted directly, no record built) and the observers' reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from mindserve._calls import Request
from mindserve._observe.observer import BatchReason, BatchReport, DropReason, DropReport, ObserverHub, Step
from mindserve._outcomes import Failure, Outcome


class BatchAccounting:
    """The accounts of one queue (a :class:`~mindserve._batching.scheduler.Scheduler` is
    one): how many batches and instances it ran, and the reports of each batch and drop."""

    def __init__(
        self,
        name: str,
        observer: ObserverHub | None,
        step: Step | None,
        padded: Callable[[int], int] | None,
        elements: Callable[[Sequence[Any]], tuple[int, int]] | None,
    ) -> None:
        self.name = name
        self.batches = 0
        self.instances = 0
        self._observer = observer
        #: What observers' reports name as the place (servable, version, model or stage).
        self.step = step
        #: Where the runtime's metrics count this step's batches, if it gathers metrics.
        self._stats = None if observer is None or step is None else observer.step_stats(step)
        self._padded = padded
        #: For padded variable-length inputs: a batch's (real, padded) elements, counted
        #: only when metrics or observers want batches (``None``: nothing to count).
        self._elements = elements

    def _count(
        self,
        size: int,
        reason: BatchReason,
        queued_at: float,
        started: float,
        outcomes: Sequence[Outcome],
        queued: int = 0,
        requests: Sequence[Request] = (),
        values: Sequence[Any] = (),
    ) -> None:
        self.batches += 1
        self.instances += size
        observer = self._observer
        stats = self._stats
        report = observer is not None and observer.wants("on_batch")
        if stats is None and not report:
            return
        now = time.monotonic()
        padded = self._padded(size) if self._padded else size
        failed = sum(1 for o in outcomes if isinstance(o, Failure))
        at = time.time()
        # The calls a batch served: for observers (tracing), not the metrics' batch log.
        calls = tuple(dict.fromkeys(r.id for r in requests)) if report else ()
        elements = self._elements(values) if self._elements is not None and values else None
        if stats is not None:  # the runtime's metrics: counted directly, no record built
            stats.count(
                size, padded, reason, started - queued_at, now - started, queued, failed, at, calls, elements
            )
        if report:
            observer.on_batch(  # type: ignore[union-attr]
                BatchReport(
                    where=self.name,
                    size=size,
                    padded_to=padded,
                    reason=reason,
                    queue_wait=started - queued_at,
                    run_seconds=now - started,
                    queued=queued,
                    failed=failed,
                    step=self.step,
                    at=at,
                    calls=calls,
                    elements=None if elements is None else elements[0],
                    padded_elements=None if elements is None else elements[1],
                )
            )

    def _report_drop(self, count: int, reason: DropReason) -> None:
        if self._observer is not None and self._observer.wants("on_drop"):
            self._observer.on_drop(DropReport(self.name, count, reason, self.step))

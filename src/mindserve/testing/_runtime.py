"""A runtime whose batching decisions do not depend on timing, for tests."""

from __future__ import annotations

from collections.abc import Iterable

from mindserve._observe.observer import Observer
from mindserve._runtime import Runtime


class DeterministicRuntime(Runtime):
    """A :class:`~mindserve.Runtime` for tests: batch composition is reproducible.

    Rules, for every model and batched stage of every servable it starts:

    * **a batch holds the instances of one call only**: calls never share a batch, however
      many callers run at once;
    * a call's instances are grouped in their order, by batch key (dtype and shape; and the
      value of each input without a batch dimension), into batches of up to the model's
      ``max_batch_size`` (a batched stage's ``batch_size``): 5 instances with
      ``max_batch_size=2`` always run as batches of 2, 2 and 1;
    * nothing waits on a clock: ``Batching.max_delay`` and ``refill_wait`` are ignored,
      and every batch runs on the model's executor thread (never inline in the caller's);
    * no warm-up: models load without running, so a model replaced by a callable is called
      only by your requests.

    Padding to buckets, the one-by-one retry of a failing batch, deadlines and
    ``max_queue`` work as in :class:`~mindserve.Runtime`. It takes the same arguments,
    except ``warm_up``.
    """

    _deterministic = True  # handed to the loading of every version it starts

    def __init__(
        self,
        *,
        device_target: str | None = None,
        device_id: int = 0,
        async_workers: int = 8,
        observers: Iterable[Observer] = (),
        metrics: bool = True,
    ) -> None:
        super().__init__(
            device_target=device_target,
            device_id=device_id,
            async_workers=async_workers,
            warm_up=False,
            observers=observers,
            metrics=metrics,
        )

    def __repr__(self) -> str:
        return super().__repr__().replace("mindserve.Runtime", "mindserve.testing.DeterministicRuntime", 1)

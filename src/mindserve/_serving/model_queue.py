"""A loaded model: checks each instance's inputs, batches them, runs, slices the outputs.

Each model has a :class:`~mindserve._batching.scheduler.Scheduler`: instances from every caller
join one queue and run in batches, one batch at a time (MindSpore networks also hold
MindSpore's process lock), so any number of threads may call :meth:`LoadedModel.submit`.
Batches of a model that takes any batch size are padded up to a bucket, so MindSpore
compiles few shapes. A batch that fails is retried one instance at a time, so that one
bad instance fails alone and the others still get their results.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from mindserve._batching import shapes as _batching
from mindserve._batching.scheduler import Scheduler
from mindserve._calls import Pending, Request
from mindserve._define.model import Model
from mindserve._execution.executor import Executor
from mindserve._execution.plan import ModelPlan
from mindserve._observe.observer import ObserverHub, Step
from mindserve._serving.ready import PaddedReadyModel, ReadyModel


class LoadedModel(ReadyModel):
    """A model of a running servable version, ready to run instances: its plan (warmed up)
    and its executor, behind a queue."""

    def __init__(self, model: Model, plan: ModelPlan, backend: Executor) -> None:
        super().__init__(model, plan, backend)
        self.scheduler: Scheduler | None = None
        self.warn_unbatched()

    def start(
        self,
        observer: ObserverHub | None = None,
        step: Step | None = None,
        scheduler: type[Scheduler] = Scheduler,
    ) -> None:
        """Start the scheduler that batches this model's instances across callers
        (``step`` names it in observers' reports)."""
        buckets = self.batching.buckets if self.model.with_batch_dim else None
        self.scheduler = scheduler(
            f"{self.where}: {self._what}",
            self._run_isolating,
            what=self._what,
            max_batch_size=self.batching.max_batch_size or 1,
            max_delay=self.batching.max_delay,
            refill_wait=self.batching.refill_wait,
            max_queue=self.batching.max_queue,
            capacity=self.backend.capacity,
            observer=observer,
            padded=functools.partial(_batching.bucket_for, buckets=buckets) if buckets else None,
            on_drained=self.backend.close,
            step=step,
            elements=None if self.lengths is None else self.lengths.elements,
        )

    def close(self) -> None:
        """Stop taking instances; the backend is released once the queue has drained."""
        if self.scheduler is not None:
            self.scheduler.close()
        else:
            self.backend.close()

    def submit(
        self,
        instances: Sequence[tuple[Any, ...]],
        labels: Sequence[str] | None,
        request: Request,
        inline: bool = True,
    ) -> Pending:
        """Check and queue instances; the pending step completes with one outcome each."""
        assert self.scheduler is not None, "LoadedModel.start() was not called"
        values, keys, finish = self.checked(instances, labels)
        return Pending(
            self.scheduler.submit(request, values, keys, inline and self.backend.inline), self._what, finish
        )


class PaddedModel(PaddedReadyModel, LoadedModel):
    """A loaded model whose variable-length inputs are padded (:class:`~mindserve.Padding`)."""


def loaded(model: Model, plan: ModelPlan, executor: Executor) -> LoadedModel:
    """The queue of a model on ``plan``: padded or not."""
    return (LoadedModel if plan.lengths is None else PaddedModel)(model, plan, executor)

"""A model of a servable version placed in worker processes: the executor the model's
queue (in the main process) runs its batches on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mindserve._calls import Request
from mindserve._execution.plan import ModelPlan, WarmUp
from mindserve._values import TensorSpec
from mindserve._workers.pool import WorkerPool
from mindserve._workers.protocol import RunModel


class WorkerBackend:
    """A model of a servable version running in worker processes: the model's queue
    (in this process) sends each batch to an idle worker; up to one batch per worker runs
    at once."""

    #: Callers never run a batch in their own thread: they wait for it with their timeout,
    #: which then holds even while a worker is slow, restarting or hung.
    inline = False

    def __init__(
        self,
        pool: WorkerPool,
        model: str,
        input_specs: tuple[TensorSpec, ...] | None,
        *,
        lend: bool,
        warmed: WarmUp | None = None,
    ) -> None:
        self.pool = pool
        self.model = model
        self.input_specs = input_specs
        self.capacity = pool.size
        self._lend = lend
        self._warmed = warmed
        pool.retain()

    def warm_up(self, plan: ModelPlan) -> WarmUp:
        """What the workers' warm-up did (each worker warms up as it loads the version)."""
        return WarmUp((), plan.batching.buckets) if self._warmed is None else self._warmed

    def run(self, arrays: tuple[np.ndarray, ...], requests: Sequence[Request] = ()) -> tuple[np.ndarray, ...]:
        return self.pool.call(RunModel(self.model, arrays), requests, lend=self._lend)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.pool.release()

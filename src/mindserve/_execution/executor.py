"""The executor: what computes a model's batches, behind one small interface.

An :class:`Executor` is opened by the model's source (:mod:`.sources`); in this process it
is a MindSpore network or a Python callable (:mod:`.local`), in worker processes one slot
per worker (``mindserve._workers.placement.WorkerBackend``). :func:`run_batch` runs one batch of
instances on it as a plan says (padded to a bucket, outputs checked and sliced), and
:func:`warm_up` compiles the plan's buckets, wherever the executor lives.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from mindserve._batching import shapes as _batching
from mindserve._calls import Request
from mindserve._errors import LoadError, ModelError, counted, describe
from mindserve._execution.plan import ModelPlan, WarmUp
from mindserve._outcomes import Failure, Outcome
from mindserve._values import TensorSpec

logger = logging.getLogger("mindserve")

#: Seconds the warm-up pauses between two compiles, for serving versions to take MindSpore.
_PAUSE_BETWEEN_COMPILES = 0.01


class Executor(Protocol):
    """Runs batches of one model: the seam between a model's scheduler and what computes.

    ``input_specs`` (with the batch dimension) is ``None`` when unknown. ``capacity``: how
    many batches it can run at once (the scheduler never runs more): 1 in this process,
    where MindSpore must not be entered twice; one per worker for a pool of processes.
    ``run`` computes one batch for ``requests`` (the calls it serves) and may raise
    anything: the model's queue turns it into instance errors. ``warm_up`` compiles the
    plan's batch sizes where the executor runs (see :func:`warm_up`). ``close`` releases
    what it holds; it is called once, when the version unloads.
    """

    input_specs: tuple[TensorSpec, ...] | None
    capacity: int
    #: Whether a caller's thread may run a batch itself when the model is idle.
    inline: bool
    #: Whether it never writes to its input arrays (a lone instance may then be passed
    #: as a view of the caller's own arrays, not a copy).
    reads_only: bool

    def run(
        self, arrays: tuple[np.ndarray, ...], requests: Sequence[Request] = ()
    ) -> tuple[np.ndarray, ...]: ...

    def warm_up(self, plan: ModelPlan) -> WarmUp: ...

    def close(self) -> None: ...


def run_batch(
    plan: ModelPlan, executor: Executor, batch: list[tuple[np.ndarray, ...]], requests: Sequence[Request] = ()
) -> list[Outcome] | Failure:
    """Run instances as one batch (padded to the plan's bucket, and along variable-length
    axes to their length bucket); their outputs, or one failure."""
    with_batch_dim = plan.with_batch_dim
    lengths = plan.lengths
    inputs = None
    try:
        if with_batch_dim:
            buckets = plan.batching.buckets
            pad_to = _batching.bucket_for(len(batch), buckets) if buckets else None
            if lengths is not None:
                inputs, own = lengths.stack(batch, pad_to)
            else:
                inputs = _batching.stack(batch, plan.unbatched, pad_to, copy=not executor.reads_only)
        else:
            inputs = batch[0]
        outputs = executor.run(inputs, requests)
    except BaseException as exc:  # a callable model may raise anything; nothing escapes
        return Failure(ModelError, _failed(plan, executor, inputs, exc), exc)
    if plan.outputs is not None and len(outputs) != plan.outputs:
        return Failure(
            ModelError,
            f"{plan.serving_count('outputs', plan.outputs, len(outputs))}model '{plan.name}' "
            f"returned {counted(len(outputs), 'output')}; it is declared with outputs={plan.outputs}",
        )
    if not with_batch_dim:
        return [tuple(np.asarray(o) for o in outputs)]
    if lengths is not None:
        sliced = lengths.unstack(outputs, pad_to or len(batch), own)
    else:
        sliced = _batching.unstack(outputs, pad_to or len(batch), len(batch))
    if isinstance(sliced, str):
        return Failure(ModelError, f"model '{plan.name}': {sliced}")
    return sliced  # type: ignore[return-value]


def _failed(
    plan: ModelPlan, executor: Executor, inputs: tuple[np.ndarray, ...] | None, exc: BaseException
) -> str:
    """``model 'm' failed: <the error>``; for a network that can say what it expected
    (:meth:`~mindserve._execution.local.NetworkExecutor.explain`), ``model 'm' failed on input 0:
    expected ...; got .... MindSpore: <the error>``."""
    explain = getattr(executor, "explain", None)
    if inputs is not None and explain is not None and not isinstance(exc, KeyboardInterrupt):
        try:
            located = explain(inputs, plan.with_batch_dim)
        except Exception:  # explaining must never hide the error itself
            located = None
        if located is not None:
            return f"model '{plan.name}' failed on {located}. MindSpore: {describe(exc, first_line=True)}"
    return f"model '{plan.name}' failed: {describe(exc, first_line=True)}"


def warm_up(plan: ModelPlan, executor: Executor) -> WarmUp:
    """Compile every bucket once on zeros (when all input shapes are known) and check outputs.

    Returns each batch size run with its seconds, and the buckets to keep. A padded model
    runs each batch size at each length bucket (the whole grid: no request inside the
    buckets pays a compile). Each bucket runs once, so the same model and options always
    get the same buckets. ``Batching(prune_buckets=True)`` also times each bucket and
    keeps only those faster than every larger one (not for a padded model).
    ``Batching(warm_up=False)`` runs one batch of 1 (at the smallest length bucket), to
    check the outputs.
    """
    lengths = plan.warm_up_lengths()
    instances = [plan.warm_up_instance(length) for length in lengths]
    if any(instance is None for instance in instances):
        return WarmUp((), plan.batching.buckets)
    sizes = plan.warm_up_sizes()
    grid = [
        (size, length, instance) for length, instance in zip(lengths, instances) if instance for size in sizes
    ]
    prune = plan.prunes and plan.lengths is None
    compiled: list[tuple[int, float]] = []
    seconds = {}
    for position, (size, length, instance) in enumerate(grid, start=1):
        at = "" if length is None else f" at length {length}"
        logger.info(
            "%s: model '%s' warming up batch size %d%s (%d of %d) ...",
            plan.where,
            plan.name,
            size,
            at,
            position,
            len(grid),
        )
        run = functools.partial(run_batch, plan, executor, [instance] * size)
        started = time.perf_counter()
        outcome = run()
        took = time.perf_counter() - started
        if isinstance(outcome, Failure):
            raise LoadError(f"{plan.where}: model '{plan.name}' failed its warm-up run: {outcome.detail}")
        compiled.append((size, took))
        logger.info(
            "%s: model '%s' warmed up batch size %d%s in %.2f s (%d of %d)",
            plan.where,
            plan.name,
            size,
            at,
            took,
            position,
            len(grid),
        )
        if prune:  # only pruning needs the timings
            seconds[size] = _median_seconds(run)
        # MindSpore's lock is not fair: without a pause, the next compile takes it again
        # at once, and versions serving beside this load (a hot update) starve.
        if position < len(grid):
            time.sleep(_PAUSE_BETWEEN_COMPILES)
    what = f"{len(sizes)} batch sizes"
    if plan.lengths is not None:
        what = f"{len(grid)} graphs ({len(sizes)} batch sizes x {len(lengths)} lengths)"
    logger.info(
        "%s: model '%s' warmed up %s in %.2f s", plan.where, plan.name, what, sum(t for _, t in compiled)
    )
    kept = _batching.prune_buckets(seconds) if prune else plan.batching.buckets
    return WarmUp(tuple(compiled), kept, () if plan.lengths is None else tuple(lengths))  # type: ignore[arg-type]


def _median_seconds(run: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]

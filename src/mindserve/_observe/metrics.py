"""Metrics: what a runtime did, counted as it happens.

Every runtime has a :class:`MetricsCollector` (unless made with ``metrics=False``). It counts
calls and instances by outcome, keeps latency, queue-wait and run-time histograms, batch
sizes, batching reasons, drops, load times, and the last batches of each model and batched
stage; :meth:`Runtime.metrics` freezes it into a :class:`Metrics` snapshot,
:meth:`Runtime.batch_log` returns the recent batches.

Calls and batches are counted directly, by the runtime and the schedulers, into per-method
and per-step stats (no record is built for them): a count is appended to a queue without a
lock and folded in by whoever reads. Rare events (versions, warm-ups, drops) arrive as an
:class:`Observer`'s reports. The cost is measured in ``bench/bench_metrics.py``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import numpy as np

from mindserve._errors import NotFoundError
from mindserve._observe.observer import (
    BatchReason,
    BatchReport,
    DropReason,
    DropReport,
    EventKind,
    Observer,
    Outcome,
    Step,
    VersionEvent,
    WarmUpReport,
)
from mindserve._observe.status import WorkerInfo

#: Upper bounds (seconds) of the buckets of every duration histogram; a last bucket holds
#: what is slower than the last bound.
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BOUNDS = np.array(SECONDS_BUCKETS)

#: How many recent values the quantiles (p50, p90, p99) of a histogram are computed over.
QUANTILE_WINDOW = 1024
#: How many recent batches :meth:`Runtime.batch_log` keeps per model or batched stage.
BATCH_LOG_SIZE = 256
#: Counts pending (appended without a lock) before a caller folds them in.
FOLD_AT = 256
#: How many unloaded versions of each servable keep their (compacted) counts.
UNLOADED_KEPT = 16


@attrs.frozen
class Histogram:
    """A distribution of seconds since the version loaded.

    ``counts[i]`` values were at most ``bounds[i]`` (and above the bound before); the last
    count is of values above every bound. ``p50``, ``p90`` and ``p99`` are over the last
    :data:`QUANTILE_WINDOW` values (``None`` before the first, or once the version unloaded).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


@attrs.frozen
class MethodMetrics:
    """One method of one version: calls (``requests``) and instances by outcome (keys are
    :class:`Outcome` values: ``"ok"``, ``"invalid_input"``, ``"timed_out"``, ...), and the
    calls' latency."""

    servable: str
    version: int
    method: str
    requests: Mapping[str, int]
    instances: Mapping[str, int]
    latency: Histogram

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())

    @property
    def instance_count(self) -> int:
        return sum(self.instances.values())


@attrs.frozen
class ModelMetrics:
    """One model (``kind="model"``) or batched stage (``kind="stage"``) of one version.

    ``batch_sizes`` maps each batch size run to how many batches had it; ``padding`` counts
    the padding instances added to reach a bucket; ``reasons`` counts batches by why they
    ran (:class:`BatchReason` values); ``queue_wait`` is the oldest instance's wait per
    batch, ``run_time`` each batch's run; ``queue_depth`` the instances queued now;
    ``dropped`` counts instances dropped or refused before running, by :class:`DropReason`
    value; ``load_seconds`` and ``compiled`` come from its load and warm-up. For a model
    with variable-length inputs (:class:`~mindserve.Padding`), ``elements`` counts the
    elements of its padded inputs the instances held and ``padded_elements`` the same
    instances' elements once padded to their length bucket: their ratio is the length
    padding's waste (rows added to reach a batch bucket are counted in ``padding``).
    """

    servable: str
    version: int
    kind: str
    name: str
    batches: int
    instances: int
    batch_sizes: Mapping[int, int]
    padding: int
    reasons: Mapping[str, int]
    queue_wait: Histogram
    run_time: Histogram
    queue_depth: int
    dropped: Mapping[str, int]
    load_seconds: float | None
    compiled: tuple[tuple[int, float], ...]
    elements: int = 0
    padded_elements: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.instances / self.batches if self.batches else 0.0


@attrs.frozen
class ServableMetrics:
    """One version of a servable: its methods, models and batched stages, and workers.

    ``running`` is ``False`` for a version that unloaded (its counts stay, for a while).
    """

    name: str
    version: int
    running: bool
    methods: tuple[MethodMetrics, ...]
    models: tuple[ModelMetrics, ...]
    workers: tuple[WorkerInfo, ...] = ()


@attrs.frozen
class Metrics:
    """A snapshot of a runtime's metrics (see :meth:`Runtime.metrics`), newest version last."""

    servables: tuple[ServableMetrics, ...]

    def servable(self, name: str, version: int = 0) -> ServableMetrics:
        """One version of a servable (``version=0``: the newest with metrics)."""
        found = [s for s in self.servables if s.name == name and version in (0, s.version)]
        if not found:
            have = sorted({f"{s.name} v{s.version}" for s in self.servables})
            which = "" if not version else f" version {version}"
            raise NotFoundError(f"no metrics for servable {name!r}{which}; there are metrics for {have}")
        return max(found, key=lambda s: s.version)

    def method(self, servable: str, method: str, version: int = 0) -> MethodMetrics:
        """One method's metrics; a method never called yet has zero counts."""
        found = self.servable(servable, version)
        for entry in found.methods:
            if entry.method == method:
                return entry
        return MethodMetrics(found.name, found.version, method, {}, {}, _empty_histogram())

    def model(self, servable: str, name: str, version: int = 0, kind: str = "model") -> ModelMetrics:
        """One model's (or with ``kind="stage"``, batched stage's) metrics."""
        found = self.servable(servable, version)
        for entry in found.models:
            if entry.name == name and entry.kind == kind:
                return entry
        other = next((m.kind for m in found.models if m.name == name), None)
        hint = (
            ""
            if other is None
            else f". Hint: {name!r} is a {_KIND_WORDS.get(other, other)}: .model(..., kind={other!r})"
        )
        raise NotFoundError(
            f"servable '{found.name}' version {found.version} has no {kind} {name!r} that batches; "
            f"it has {sorted(f'{m.kind} {m.name}' for m in found.models)}{hint}"
        )


_KIND_WORDS = {"stage": "batched stage"}


class _Series:
    """A histogram being filled."""

    __slots__ = ("count", "counts", "recent", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(SECONDS_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0
        self.recent: deque[float] | None = deque(maxlen=QUANTILE_WINDOW)

    def add_all(self, values: list[float]) -> None:
        """Count values at once: their buckets found by numpy in one call."""
        found = np.bincount(np.searchsorted(_BOUNDS, values, side="left"), minlength=len(self.counts))
        self.counts = [have + new for have, new in zip(self.counts, found.tolist())]
        self.count += len(values)
        self.sum += sum(values)
        recent = self.recent  # read once: the version may unload meanwhile
        if recent is not None:
            recent.extend(values)

    def freeze(self) -> Histogram:
        recent = sorted(self.recent) if self.recent else None
        return Histogram(
            SECONDS_BUCKETS,
            tuple(self.counts),
            self.count,
            self.sum,
            *((_rank(recent, q) for q in (0.5, 0.9, 0.99)) if recent else ()),
        )


def _rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def _empty_histogram() -> Histogram:
    return Histogram(SECONDS_BUCKETS, (0,) * (len(SECONDS_BUCKETS) + 1), 0, 0.0)


def _values(counts: Mapping[Any, int]) -> dict[str, int]:
    """Counts kept by enum member (the quickest key), as their string values."""
    return {key.value: count for key, count in counts.items()}


def _bump(counts: dict[Any, int], key: Any, by: int = 1) -> None:
    counts[key] = counts.get(key, 0) + by


class _Pending:
    """Counts that callers append to without a lock (``deque.append`` is atomic), folded in
    under the lock by whoever reads them, or by a caller once many have piled up: 64 threads
    ending calls at once would queue on a lock (and the GIL with it), not on an append."""

    __slots__ = ("lock", "pending")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: deque[tuple[Any, ...]] = deque()

    def _add(self, event: tuple[Any, ...]) -> None:
        pending = self.pending
        pending.append(event)
        if len(pending) >= FOLD_AT and self.lock.acquire(blocking=False):
            try:
                self.fold()
            finally:
                self.lock.release()

    def fold(self) -> None:
        """Count what is pending (the caller holds ``lock``): what was appended meanwhile
        waits for the next fold."""
        pending = self.pending
        if pending:
            popleft = pending.popleft
            self._take([popleft() for _ in range(len(pending))])

    def _take(self, events: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError


class _MethodStats(_Pending):
    """One method's counts; ``count`` is called by the runtime at the end of every call."""

    __slots__ = ("instances", "latency", "requests")

    def __init__(self) -> None:
        super().__init__()
        self.requests: dict[Outcome, int] = {}
        self.instances: dict[Outcome, int] = {}
        self.latency = _Series()

    def count(self, outcome: Outcome, outcomes: Iterable[tuple[Outcome, int]], seconds: float) -> None:
        self._add((outcome, outcomes, seconds))

    def _take(self, events: list[tuple[Any, ...]]) -> None:
        requests, instances = self.requests, self.instances
        for outcome, outcomes, _ in events:
            requests[outcome] = requests.get(outcome, 0) + 1
            for kind, n in outcomes:
                instances[kind] = instances.get(kind, 0) + n
        self.latency.add_all([event[2] for event in events])


class _StepStats(_Pending):
    """One model's or batched stage's counts; ``count`` is called by its scheduler after
    every batch. The batch log keeps plain tuples: :meth:`reports` makes the records."""

    __slots__ = (
        "batch_sizes",
        "batches",
        "dropped",
        "elements",
        "instances",
        "log",
        "padded_elements",
        "padding",
        "queue_wait",
        "reasons",
        "run_time",
        "step",
    )

    def __init__(self, step: Step) -> None:
        super().__init__()
        self.step = step
        self.batches = 0
        self.instances = 0
        self.batch_sizes: dict[int, int] = {}
        self.padding = 0
        self.elements = 0
        self.padded_elements = 0
        self.reasons: dict[BatchReason, int] = {}
        self.queue_wait = _Series()
        self.run_time = _Series()
        self.dropped: dict[DropReason, int] = {}
        self.log: deque[tuple[Any, ...]] | None = deque(maxlen=BATCH_LOG_SIZE)

    def count(
        self,
        size: int,
        padded: int,
        reason: BatchReason,
        queue_wait: float,
        run_seconds: float,
        queued: int,
        failed: int,
        at: float,
        calls: tuple[int, ...],
        elements: tuple[int, int] | None = None,
    ) -> None:
        self._add((size, padded, reason, queue_wait, run_seconds, queued, failed, at, calls, elements))

    def _take(self, events: list[tuple[Any, ...]]) -> None:
        sizes, reasons = self.batch_sizes, self.reasons
        for size, padded, reason, *_, elements in events:
            self.instances += size
            sizes[size] = sizes.get(size, 0) + 1
            self.padding += padded - size
            reasons[reason] = reasons.get(reason, 0) + 1
            if elements is not None:
                self.elements += elements[0]
                self.padded_elements += elements[1]
        self.batches += len(events)
        self.queue_wait.add_all([event[3] for event in events])
        self.run_time.add_all([event[4] for event in events])
        if self.log is not None:
            self.log.extend(events)

    def reports(self) -> list[BatchReport]:
        where = str(self.step)
        with self.lock:
            self.fold()
            log = list(self.log or ())
        return [
            BatchReport(
                where,
                size,
                padded,
                reason,
                wait,
                run,
                queued,
                failed,
                step=self.step,
                at=at,
                calls=calls,
                elements=None if elements is None else elements[0],
                padded_elements=None if elements is None else elements[1],
            )
            for size, padded, reason, wait, run, queued, failed, at, calls, elements in log
        ]


class _VersionStats:
    __slots__ = ("loads", "methods", "running", "steps")

    def __init__(self) -> None:
        self.methods: dict[str, _MethodStats] = {}
        self.steps: dict[tuple[str, str], _StepStats] = {}
        self.loads: dict[str, WarmUpReport] = {}
        self.running = True

    def compact(self) -> None:
        """The version unloaded: keep its counts, free its recent values."""
        self.running = False
        for method in self.methods.values():
            with method.lock:
                method.fold()
                method.latency.recent = None
        for step in self.steps.values():
            with step.lock:
                step.fold()
                step.queue_wait.recent = step.run_time.recent = None
                step.log = None


class MetricsCollector(Observer):
    """Holds a runtime's metrics: the stats calls and batches count into, and the reports of
    versions, warm-ups and drops (thread-safe; see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, int], _VersionStats] = {}
        #: The stats of each (servable, version, method), found with one dict read.
        self._methods: dict[tuple[str, int, str], _MethodStats] = {}

    def _version(self, servable: str, version: int) -> _VersionStats:
        found = self._versions.get((servable, version))
        if found is None:
            found = self._versions[(servable, version)] = _VersionStats()
        return found

    def _step(self, step: Step) -> _StepStats:
        steps = self._version(step.servable, step.version).steps
        found = steps.get((step.kind, step.name))
        if found is None:
            found = steps[(step.kind, step.name)] = _StepStats(step)
        return found

    # -- reports -------------------------------------------------------------------

    def method_stats(self, servable: str, version: int, method: str) -> _MethodStats:
        """Where the runtime counts the calls of a method (one dict read once created)."""
        key = (servable, version, method)
        stats = self._methods.get(key)
        if stats is None:
            with self._lock:
                methods = self._version(servable, version).methods
                stats = methods.get(method)
                if stats is None:
                    stats = methods[method] = _MethodStats()
                self._methods[key] = stats
        return stats

    def step_stats(self, step: Step) -> _StepStats:
        """Where a scheduler counts its batches."""
        with self._lock:
            return self._step(step)

    def on_drop(self, report: DropReport) -> None:
        if report.step is None:
            return
        with self._lock:
            _bump(self._step(report.step).dropped, report.reason, report.count)

    def on_warm_up(self, report: WarmUpReport) -> None:
        with self._lock:
            self._version(report.servable, report.version).loads[report.model] = report

    def on_version(self, event: VersionEvent) -> None:
        if event.kind is not EventKind.UNLOADED or event.version is None:
            return
        with self._lock:
            found = self._versions.get((event.servable, event.version))
            if found is not None:
                found.compact()
            unloaded = [k for k, v in self._versions.items() if k[0] == event.servable and not v.running]
            for key in sorted(unloaded)[:-UNLOADED_KEPT]:
                del self._versions[key]
                for method in [m for m in self._methods if m[:2] == key]:
                    del self._methods[method]

    # -- reading -------------------------------------------------------------------

    def snapshot(
        self, depths: Mapping[Step, int], workers: Mapping[tuple[str, int], tuple[WorkerInfo, ...]]
    ) -> Metrics:
        """Freeze the counts; ``depths`` and ``workers`` come from what is running now."""
        with self._lock:
            servables = [
                self._freeze(name, version, stats, depths, workers.get((name, version), ()))
                for (name, version), stats in sorted(self._versions.items())
            ]
        return Metrics(tuple(servables))

    @staticmethod
    def _freeze(
        name: str,
        version: int,
        stats: _VersionStats,
        depths: Mapping[Step, int],
        workers: tuple[WorkerInfo, ...],
    ) -> ServableMetrics:
        methods = []
        for method, m in sorted(stats.methods.items()):
            with m.lock:
                m.fold()
                methods.append(
                    MethodMetrics(
                        name, version, method, _values(m.requests), _values(m.instances), m.latency.freeze()
                    )
                )
        keys = set(stats.steps) | {("model", model) for model in stats.loads}
        keys |= {
            (step.kind, step.name) for step in depths if (step.servable, step.version) == (name, version)
        }
        models = []
        for kind, step_name in sorted(keys):
            s = stats.steps.get((kind, step_name)) or _StepStats(Step(name, version, kind, step_name))
            load = stats.loads.get(step_name) if kind == "model" else None
            with s.lock:
                s.fold()
                models.append(
                    ModelMetrics(
                        servable=name,
                        version=version,
                        kind=kind,
                        name=step_name,
                        batches=s.batches,
                        instances=s.instances,
                        batch_sizes=dict(sorted(s.batch_sizes.items())),
                        padding=s.padding,
                        reasons=_values(s.reasons),
                        queue_wait=s.queue_wait.freeze(),
                        run_time=s.run_time.freeze(),
                        queue_depth=depths.get(Step(name, version, kind, step_name), 0),
                        dropped=_values(s.dropped),
                        load_seconds=None if load is None else load.seconds,
                        compiled=() if load is None else load.compiled,
                        elements=s.elements,
                        padded_elements=s.padded_elements,
                    )
                )
        return ServableMetrics(name, version, stats.running, tuple(methods), tuple(models), workers)

    def batch_log(self, servable: str, version: int, steps: Iterable[tuple[str, str]]) -> list[BatchReport]:
        """The recent batches of some steps of a version, oldest first."""
        with self._lock:
            stats = self._versions.get((servable, version))
            found = [] if stats is None else [stats.steps[key] for key in steps if key in stats.steps]
        return sorted((report for step in found for report in step.reports()), key=lambda report: report.at)

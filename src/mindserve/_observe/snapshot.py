"""The metrics snapshot: what :meth:`Runtime.metrics` returns.

Frozen records, built by :class:`~mindserve._observe.metrics.MetricsCollector` when it is
read: a :class:`Metrics` of :class:`ServableMetrics` (one per version), each with its
:class:`MethodMetrics` and :class:`ModelMetrics`, whose durations are histograms (:class:`Histogram`).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mindserve._errors import NotFoundError
from mindserve._observe.status import WorkerInfo

#: Upper bounds (seconds) of the buckets of every duration histogram; a last bucket holds
#: what is slower than the last bound.
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: How many recent values the quantiles (p50, p90, p99) of a histogram are computed over.
QUANTILE_WINDOW = 1024


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


def _empty_histogram() -> Histogram:
    return Histogram(SECONDS_BUCKETS, (0,) * (len(SECONDS_BUCKETS) + 1), 0, 0.0)

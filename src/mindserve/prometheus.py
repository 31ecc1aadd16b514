"""Prometheus metrics for a runtime (needs the ``mindserve[prometheus]`` extra).

Register a collector in your registry; your exporter or web app serves it::

    import prometheus_client
    import mindserve.prometheus

    mindserve.prometheus.register(rt)           # into prometheus_client.REGISTRY
    prometheus_client.start_http_server(9100)   # or your app's /metrics route

Every scrape reads :meth:`Runtime.metrics`; the families and their labels are listed in
docs/metrics.md. Importing :mod:`mindserve` does not import this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mindserve._errors import ExtraUnavailableError
from mindserve._observe.snapshot import Histogram, ModelMetrics

if TYPE_CHECKING:
    from mindserve._runtime import Runtime

try:
    from prometheus_client.core import (
        REGISTRY,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ExtraUnavailableError(
        "mindserve.prometheus needs the prometheus-client package. Hint: pip install 'mindserve[prometheus]'"
    ) from exc

__all__ = ["MindServeCollector", "register"]

_METHOD = ["servable", "version", "method"]
_MODEL = ["servable", "version", "model", "kind"]


class MindServeCollector(Collector):
    """Exposes a :class:`mindserve.Runtime`'s metrics under Prometheus names.

    ``prefix`` starts every family name (default ``"mindserve"``).
    """

    def __init__(self, runtime: Runtime, prefix: str = "mindserve") -> None:
        self.runtime = runtime
        self.prefix = prefix

    def describe(self) -> list[Any]:
        return []  # the families depend on what runs: described at each collect

    def collect(self) -> Iterator[Any]:
        p = self.prefix
        snapshot = self.runtime.metrics()
        requests = CounterMetricFamily(
            f"{p}_requests", "Calls of a method, by how they ended.", labels=[*_METHOD, "outcome"]
        )
        instances = CounterMetricFamily(
            f"{p}_instances",
            "Instances of calls of a method, by how each ended.",
            labels=[*_METHOD, "outcome"],
        )
        latency = HistogramMetricFamily(
            f"{p}_request_duration_seconds", "Seconds a call of a method took, end to end.", labels=_METHOD
        )
        batches = CounterMetricFamily(
            f"{p}_batches",
            "Batches run by a model or batched stage, by why each ran.",
            labels=[*_MODEL, "reason"],
        )
        sizes = HistogramMetricFamily(f"{p}_batch_size", "Instances per batch.", labels=_MODEL)
        padding = CounterMetricFamily(
            f"{p}_padding_instances", "Padding instances added to reach a batch-size bucket.", labels=_MODEL
        )
        elements = CounterMetricFamily(
            f"{p}_length_elements",
            "Elements of variable-length (padded) inputs: the instances' own (real) and padded to their "
            "length bucket (padded); rows added to reach a batch bucket are in padding_instances.",
            labels=[*_MODEL, "of"],
        )
        waits = HistogramMetricFamily(
            f"{p}_queue_wait_seconds",
            "Seconds the oldest instance of a batch waited in the queue.",
            labels=_MODEL,
        )
        runs = HistogramMetricFamily(f"{p}_batch_run_seconds", "Seconds a batch ran.", labels=_MODEL)
        depth = GaugeMetricFamily(f"{p}_queue_depth", "Instances queued now.", labels=_MODEL)
        dropped = CounterMetricFamily(
            f"{p}_dropped_instances",
            "Instances dropped or refused before they ran, by why.",
            labels=[*_MODEL, "reason"],
        )
        loads = GaugeMetricFamily(
            f"{p}_load_duration_seconds", "Seconds a model took to load and warm up.", labels=_MODEL
        )
        running = GaugeMetricFamily(
            f"{p}_version_running", "1 while a version runs, 0 once unloaded.", labels=["servable", "version"]
        )
        workers = GaugeMetricFamily(
            f"{p}_workers",
            "Worker processes of a version, by state.",
            labels=["servable", "version", "state"],
        )
        restarts = CounterMetricFamily(
            f"{p}_worker_restarts",
            "Restarts of a version's worker processes.",
            labels=["servable", "version"],
        )
        for servable in snapshot.servables:
            version = str(servable.version)
            running.add_metric([servable.name, version], 1.0 if servable.running else 0.0)
            for method in servable.methods:
                labels = [servable.name, version, method.method]
                for outcome, count in sorted(method.requests.items()):
                    requests.add_metric([*labels, outcome], count)
                for outcome, count in sorted(method.instances.items()):
                    instances.add_metric([*labels, outcome], count)
                latency.add_metric(labels, *_buckets(method.latency))
            for model in servable.models:
                labels = [servable.name, version, model.name, model.kind]
                for reason, count in sorted(model.reasons.items()):
                    batches.add_metric([*labels, reason], count)
                sizes.add_metric(labels, *_size_buckets(model))
                padding.add_metric(labels, model.padding)
                if model.padded_elements:
                    elements.add_metric([*labels, "real"], model.elements)
                    elements.add_metric([*labels, "padded"], model.padded_elements)
                waits.add_metric(labels, *_buckets(model.queue_wait))
                runs.add_metric(labels, *_buckets(model.run_time))
                depth.add_metric(labels, model.queue_depth)
                for reason, count in sorted(model.dropped.items()):
                    dropped.add_metric([*labels, reason], count)
                if model.load_seconds is not None:
                    loads.add_metric(labels, model.load_seconds)
            if servable.workers:
                states: dict[str, int] = {}
                for worker in servable.workers:
                    states[worker.state] = states.get(worker.state, 0) + 1
                for state, count in sorted(states.items()):
                    workers.add_metric([servable.name, version, state], count)
                restarts.add_metric([servable.name, version], sum(w.restarts for w in servable.workers))
        yield from (
            requests,
            instances,
            latency,
            batches,
            sizes,
            padding,
            elements,
            waits,
            runs,
            depth,
            dropped,
            loads,
        )
        yield from (running, workers, restarts)


def _buckets(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    """A histogram's cumulative buckets as Prometheus wants them, and its sum."""
    cumulative: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts):
        total += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return cumulative, histogram.sum


def _size_buckets(model: ModelMetrics) -> tuple[list[tuple[str, float]], float]:
    """Batch sizes in power-of-two buckets (1, 2, 4, ...) up to the largest size run."""
    largest = max(model.batch_sizes, default=1)
    bounds = [1]
    while bounds[-1] < largest:
        bounds.append(bounds[-1] * 2)
    cumulative: list[tuple[str, float]] = [
        (str(b), sum(n for size, n in model.batch_sizes.items() if size <= b)) for b in bounds
    ]
    cumulative.append(("+Inf", model.batches))
    return cumulative, float(model.instances)


def register(runtime: Runtime, registry: Any = None, prefix: str = "mindserve") -> MindServeCollector:
    """Register a :class:`MindServeCollector` for ``runtime`` in ``registry`` (default:
    ``prometheus_client.REGISTRY``) and return it (``registry.unregister(collector)`` undoes it)."""
    collector = MindServeCollector(runtime, prefix)
    (REGISTRY if registry is None else registry).register(collector)
    return collector

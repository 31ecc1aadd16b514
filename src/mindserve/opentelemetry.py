"""OpenTelemetry traces of a runtime's calls (needs ``opentelemetry-api``; extra
``mindserve[opentelemetry]``).

    import mindserve.opentelemetry

    mindserve.opentelemetry.instrument(rt)   # the global tracer provider, or tracer_provider=...

From then on every call of ``infer``, ``infer_async`` or ``ainfer`` makes a span
``mindserve <servable>.<method>`` (a child of the caller's current span when the call
ends in the caller's thread, as ``infer``'s does), and every batch a span ``mindserve batch
<model or stage>``. The call's span carries, for each batch that ran its instances, the
events ``queued``, ``batch started`` and ``batch ended``, and a link to that batch's span;
the batch's span carries its size, padding, reason and the calls it served. A runtime not
instrumented pays nothing; :mod:`mindserve` never imports OpenTelemetry.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any

from mindserve._errors import ExtraUnavailableError
from mindserve._observe.observer import BatchReport, CallReport, Observer, Outcome
from mindserve._version import __version__

if TYPE_CHECKING:
    from mindserve._runtime import Runtime

try:
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ExtraUnavailableError(
        "mindserve.opentelemetry needs the opentelemetry-api package. "
        "Hint: pip install 'mindserve[opentelemetry]'"
    ) from exc

__all__ = ["TracingObserver", "instrument"]

#: Calls whose batches are remembered until the call ends (the oldest are forgotten first).
PENDING_CALLS = 10_000


class TracingObserver(Observer):
    """Makes the spans described in :mod:`mindserve.opentelemetry` from a runtime's reports."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer = trace.get_tracer("mindserve", __version__, tracer_provider)
        self._lock = threading.Lock()
        #: Per call number: (batch span context, queued, started, ended in ns, where) of each
        #: batch that carried its instances, until the call ends.
        self._batches: collections.OrderedDict[int, list[tuple[Any, int, int, int, str]]] = (
            collections.OrderedDict()
        )

    def on_batch(self, report: BatchReport) -> None:
        ended = int(report.at * 1e9)
        started = ended - int(report.run_seconds * 1e9)
        queued = started - int(report.queue_wait * 1e9)
        where = report.where if report.step is None else f"{report.step.kind} {report.step.name}"
        span = self._tracer.start_span(
            f"mindserve batch {where}",
            context=trace.set_span_in_context(trace.INVALID_SPAN),  # a root: it serves many calls
            start_time=queued,
            attributes={
                "mindserve.where": report.where,
                "mindserve.batch.size": report.size,
                "mindserve.batch.padded_to": report.padded_to,
                "mindserve.batch.reason": report.reason.value,
                "mindserve.batch.failed": report.failed,
                "mindserve.batch.calls": list(report.calls),
            },
        )
        span.add_event("batch started", timestamp=started)
        span.end(end_time=ended)
        entry = (span.get_span_context(), queued, started, ended, where)
        with self._lock:
            for call in report.calls:
                found = self._batches.get(call)
                if found is None:
                    self._batches[call] = [entry]
                    if len(self._batches) > PENDING_CALLS:
                        self._batches.popitem(last=False)
                else:
                    found.append(entry)

    def on_call(self, report: CallReport) -> None:
        with self._lock:
            batches = self._batches.pop(report.call, [])
        ended = time.time_ns()
        started = ended - int(report.seconds * 1e9)
        if batches:  # the call encloses its batches (the clocks read differ by microseconds)
            started = min(started, min(queued for _, queued, *_ in batches))
            ended = max(ended, max(batch_ended for *_, batch_ended, _ in batches))
        span = self._tracer.start_span(
            f"mindserve {report.servable}.{report.method}",
            start_time=started,
            links=[trace.Link(context) for context, *_ in batches],
            attributes={
                "mindserve.servable": report.servable,
                "mindserve.version": report.version,
                "mindserve.method": report.method,
                "mindserve.instances": report.instances,
                "mindserve.failed": report.failed,
                "mindserve.outcome": report.outcome.value,
            },
        )
        for _, queued, started, batch_ended, where in batches:
            span.add_event("queued", {"mindserve.where": where}, timestamp=queued)
            span.add_event("batch started", {"mindserve.where": where}, timestamp=started)
            span.add_event("batch ended", {"mindserve.where": where}, timestamp=batch_ended)
        if report.outcome is not Outcome.OK:
            span.set_status(trace.Status(trace.StatusCode.ERROR, report.error or report.outcome.value))
        span.end(end_time=ended)


def instrument(runtime: Runtime, tracer_provider: Any = None) -> TracingObserver:
    """Trace ``runtime``'s calls and batches from now on; return the observer
    (``runtime.remove_observer(observer)`` stops it)."""
    observer = TracingObserver(tracer_provider)
    runtime.add_observer(observer)
    return observer

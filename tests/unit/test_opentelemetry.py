"""mindserve.opentelemetry: spans of calls and batches, recorded by OpenTelemetry's own SDK."""

import numpy as np
import pytest

from gated import Gate, gated_servable, queued
from waiting import wait_until

pytest.importorskip(
    "opentelemetry.sdk", reason="opentelemetry-sdk is not installed: pip install 'mindserve[test]'"
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_calls_sharing_a_batch_link_to_it_with_their_queue_wait_and_run(rt, spans):
    import mindserve.opentelemetry

    provider, exporter = spans
    mindserve.opentelemetry.instrument(rt, provider)
    gate = Gate()
    rt.start(gated_servable(gate, refill_wait=0))
    first = rt.infer_async("s", "m", [{"x": np.array([0.0])}])
    assert gate.entered.wait(10)
    shared = [rt.infer_async("s", "m", [{"x": np.array([float(k)])}]) for k in (1, 2)]
    wait_until(lambda: queued(rt) == 2)
    gate.open()
    for future in [first, *shared]:
        future.result(10)
    wait_until(lambda: len([s for s in exporter.get_finished_spans() if s.name == "mindserve s.m"]) == 3)
    finished = exporter.get_finished_spans()
    batches = [s for s in finished if s.name == "mindserve batch model model"]
    calls = [s for s in finished if s.name == "mindserve s.m"]
    assert [b.attributes["mindserve.batch.size"] for b in batches] == [1, 2]
    second_batch = batches[1].context.span_id
    linked = [c for c in calls if [link.context.span_id for link in c.links] == [second_batch]]
    assert len(linked) == 2  # both calls of the shared batch link to it
    for call in linked:
        assert [e.name for e in call.events] == ["queued", "batch started", "batch ended"]
        queued_at, started, ended = (e.timestamp for e in call.events)
        assert call.start_time <= queued_at <= started <= ended <= call.end_time
        assert call.attributes["mindserve.outcome"] == "ok"
    assert batches[1].attributes["mindserve.batch.reason"] == "queue_empty"


def test_a_sync_call_is_a_child_of_the_callers_span_and_errors_mark_it(rt, spans):
    import mindserve.opentelemetry

    provider, exporter = spans
    mindserve.opentelemetry.instrument(rt, provider)
    rt.start(gated_servable(lambda x: x))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("request handler") as parent:
        rt.infer("s", "m", [{"x": np.array([1.0])}])
        with pytest.raises(mindserve.InferenceError):
            rt.infer("s", "m", [{"y": np.array([1.0])}])
    calls = [s for s in exporter.get_finished_spans() if s.name == "mindserve s.m"]
    assert [c.parent.span_id for c in calls] == [parent.get_span_context().span_id] * 2
    assert calls[0].status.status_code is trace.StatusCode.UNSET
    assert calls[1].status.status_code is trace.StatusCode.ERROR
    assert calls[1].attributes["mindserve.outcome"] == "invalid_input"


def test_removing_the_observer_stops_tracing(rt, spans):
    import mindserve.opentelemetry

    provider, exporter = spans
    observer = mindserve.opentelemetry.instrument(rt, provider)
    rt.start(gated_servable(lambda x: x))
    rt.remove_observer(observer)
    rt.infer("s", "m", [{"x": np.array([1.0])}])
    assert exporter.get_finished_spans() == ()

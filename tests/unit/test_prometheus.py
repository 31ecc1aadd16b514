"""mindserve.prometheus: a collector scraped with prometheus-client's own parser."""

import numpy as np
import pytest

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="the prometheus extra is not installed: pip install 'mindserve[prometheus]'"
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from servables import faulty_servable  # noqa: E402


def scrape(registry):
    text = prometheus_client.generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family, name=None, **labels):
    return {
        tuple(sorted((k, v) for k, v in s.labels.items() if k not in labels)): s.value
        for s in family.samples
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())
    }


def test_a_scrape_exposes_what_the_runtime_counted(rt):
    import mindserve.prometheus

    rt.start(faulty_servable())
    rt.infer("faulty", "run", [{"x": 5}, {"x": 1}, {"y": 0}, {"x": 2}, {"x": 6}], return_exceptions=True)
    for _ in range(3):
        rt.infer("faulty", "run", [{"x": 5}])
    registry = prometheus_client.CollectorRegistry()
    collector = mindserve.prometheus.register(rt, registry)
    families = scrape(registry)
    labels = {"servable": "faulty", "version": "1", "method": "run"}
    assert samples(families["mindserve_requests"], "mindserve_requests_total", **labels) == {
        (("outcome", "ok"),): 3.0,
        (("outcome", "stage_error"),): 1.0,
    }
    assert samples(families["mindserve_instances"], "mindserve_instances_total", **labels) == {
        (("outcome", "ok"),): 5.0,
        (("outcome", "stage_error"),): 1.0,
        (("outcome", "invalid_input"),): 1.0,
        (("outcome", "model_error"),): 1.0,
    }
    latency = families["mindserve_request_duration_seconds"]
    assert samples(latency, "mindserve_request_duration_seconds_count", **labels) == {(): 4.0}
    assert samples(latency, "mindserve_request_duration_seconds_bucket", le="+Inf", **labels) == {(): 4.0}
    model = {"servable": "faulty", "version": "1", "model": "double", "kind": "model"}
    metrics = rt.metrics().model("faulty", "double")
    assert samples(families["mindserve_batch_size"], "mindserve_batch_size_count", **model) == {
        (): float(metrics.batches)
    }
    assert samples(families["mindserve_batch_size"], "mindserve_batch_size_sum", **model) == {
        (): float(metrics.instances)
    }
    assert samples(families["mindserve_queue_depth"], **model) == {(): 0.0}
    assert sum(samples(families["mindserve_batches"], **model).values()) == metrics.batches
    assert samples(families["mindserve_version_running"], servable="faulty", version="1") == {(): 1.0}
    for name in (
        "mindserve_queue_wait_seconds",
        "mindserve_batch_run_seconds",
        "mindserve_load_duration_seconds",
    ):
        assert name in families
    registry.unregister(collector)
    assert "mindserve_requests" not in scrape(registry)


def test_a_custom_prefix_and_the_default_registry(rt):
    import mindserve.prometheus

    rt.start(faulty_servable())
    rt.infer("faulty", "run", [{"x": np.float32(5)}])
    collector = mindserve.prometheus.register(rt, prefix="myapp")
    try:
        families = scrape(prometheus_client.REGISTRY)
        assert "myapp_requests" in families and "mindserve_requests" not in families
    finally:
        prometheus_client.REGISTRY.unregister(collector)


def test_public_module_exports():
    import mindserve.prometheus

    assert mindserve.prometheus.__all__ == ["MindServeCollector", "register"]
    assert callable(mindserve.prometheus.MindServeCollector.collect)


def test_a_padded_model_exposes_its_real_and_padded_elements(rt):
    import mindserve.prometheus
    from servables import text_servable, tokens

    rt.start(text_servable([], buckets=[4, 8]))
    rt.infer("text", "encode", [{"x": tokens(n)} for n in (5, 7, 2)])
    registry = prometheus_client.CollectorRegistry()
    mindserve.prometheus.register(rt, registry)
    family = scrape(registry)["mindserve_length_elements"]
    model = {"servable": "text", "version": "1", "model": "model", "kind": "model"}
    assert samples(family, "mindserve_length_elements_total", **model) == {
        (("of", "real"),): 14.0 * 4,
        (("of", "padded"),): 20.0 * 4,
    }

"""Cross-caller batching on real MindSpore: concurrency, buckets and warm-up."""

import os
import random
import threading

import numpy as np

import mindserve
from conftest import run_net
from mindserve import Batching


def mlp_servable(directory, **model_options):
    svc = mindserve.Servable("mlp", directory=directory)
    mlp = svc.model("mlp.mindir", **model_options)
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    return svc


def test_warm_up_compiles_every_bucket_and_keeps_the_fast_ones(rt, exported):
    info = rt.start(mlp_servable(os.path.join(exported["root"], "mlp")), version=1)
    (model,) = info.models
    assert model.warmed_up == (1, 2, 4, 8, 16, 32, 64)
    assert model.batching.max_batch_size == 64
    assert model.batching.buckets[-1] == 64
    assert set(model.batching.buckets) <= set(model.warmed_up)


def test_explicit_buckets_and_fixed_batch_sizes(rt, exported):
    svc = mlp_servable(os.path.join(exported["root"], "mlp"), batching=Batching(buckets=[4, 16]))
    (model,) = rt.start(svc, version=1).models
    assert model.batching.buckets == (4, 16) and model.batching.max_batch_size == 16
    assert model.warmed_up == (4, 16)
    (fixed,) = rt.start(mlp_servable(os.path.join(exported["root"], "mlp_fixed"))).models
    assert fixed.batching.buckets == (4,) and fixed.batching.max_batch_size == 4


def test_fixed_batch_model_rejects_another_batch_size(rt, exported):
    svc = mlp_servable(os.path.join(exported["root"], "mlp_fixed"), batching=Batching(max_batch_size=8))
    try:
        rt.start(svc)
    except mindserve.LoadError as exc:
        assert "was exported with batch size 4, so it always runs batches of 4" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected a LoadError")


def test_concurrent_callers_get_their_own_results(rt, exported):
    """Randomized: many threads, random request sizes, one real MindIR; each result equals
    the model applied to that instance alone (up to float rounding across batch sizes)."""
    rt.start(mlp_servable(os.path.join(exported["root"], "mlp")), version=1)
    net = exported["nets"]["mlp_v1"]
    rng = random.Random(3)
    requests = {
        k: [
            np.random.default_rng(k * 100 + i).normal(size=16).astype(np.float32)
            for i in range(rng.randint(1, 9))
        ]
        for k in range(24)
    }
    answers, errors = {}, []
    barrier = threading.Barrier(len(requests))

    def caller(k):
        barrier.wait()
        try:
            answers[k] = rt.infer("mlp", "predict", [{"x": x} for x in requests[k]])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for k, xs in requests.items():
        assert len(answers[k]) == len(xs)
        for x, answer in zip(xs, answers[k]):
            np.testing.assert_allclose(answer["logits"], run_net(net, x[None])[0], rtol=1e-5, atol=1e-6)
    (model,) = rt.status()[0].models
    assert model.instances == sum(len(xs) for xs in requests.values())
    assert model.instances / model.batches <= 64


def test_fixed_batch_model_under_concurrency(rt, exported):
    rt.start(mlp_servable(os.path.join(exported["root"], "mlp_fixed")))
    net = exported["nets"]["mlp_v1"]
    xs = [np.full(16, k / 7, np.float32) for k in range(12)]
    results = [None] * len(xs)

    def caller(k):
        results[k] = rt.infer("mlp", "predict", [{"x": xs[k]}])[0]["logits"]

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for x, result in zip(xs, results):
        np.testing.assert_allclose(result, run_net(net, np.stack([x] * 4))[0], rtol=1e-5, atol=1e-6)

"""Cross-caller batching on real MindSpore: concurrency, buckets and warm-up."""

import logging
import os
import random
import re
import threading

import numpy as np
import pytest

import mindserve
from mindserve import Batching
from observers import WarmUps
from reference import run_net
from servables import mlp_servable


@pytest.mark.warm_up
def test_warm_up_compiles_every_bucket_once_and_keeps_them_all(rt, exported, caplog):
    """Deterministic: the same buckets on every run, one logged run per bucket."""
    caplog.set_level(logging.INFO, logger="mindserve")
    info = rt.start(mlp_servable(os.path.join(exported["root"], "mlp")), version=1)
    (model,) = info.models
    assert model.warmed_up == (1, 2, 4, 8, 16, 32, 64)
    assert model.batching.buckets == (1, 2, 4, 8, 16, 32, 64)
    assert model.batching.max_batch_size == 64
    runs = [r.getMessage() for r in caplog.records if "warmed up batch size" in r.getMessage()]
    assert len(runs) == 7
    assert "model 'mlp' warmed up batch size 64 in" in runs[-1] and "(7 of 7)" in runs[-1]
    assert any("warmed up 7 batch sizes in" in r.getMessage() for r in caplog.records)
    # Each bucket says what it does before its compile, and how long it took after.
    steps = [re.search(r"(warming|warmed) up batch size (\d+)", r.getMessage()) for r in caplog.records]
    assert [(m[1], int(m[2])) for m in steps if m] == [
        (word, size) for size in (1, 2, 4, 8, 16, 32, 64) for word in ("warming", "warmed")
    ]
    assert "model 'mlp' warming up batch size 64 (7 of 7) ..." in caplog.text


@pytest.mark.warm_up
def test_pruning_buckets_is_asked_for(rt, exported):
    svc = mlp_servable(os.path.join(exported["root"], "mlp"), batching=Batching(prune_buckets=True))
    (model,) = rt.start(svc, version=1).models
    assert model.warmed_up == (1, 2, 4, 8, 16, 32, 64)
    assert model.batching.buckets[-1] == 64 and set(model.batching.buckets) <= set(model.warmed_up)


@pytest.mark.warm_up
@pytest.mark.parametrize("switch", ["argument", "environment"])
def test_warm_up_can_be_switched_off_for_the_whole_runtime(exported, monkeypatch, switch):
    observer = WarmUps()
    if switch == "environment":
        monkeypatch.setenv("MINDSERVE_WARM_UP", "0")
        runtime = mindserve.Runtime(observers=[observer])
    else:
        monkeypatch.setenv("MINDSERVE_WARM_UP", "1")
        runtime = mindserve.Runtime(warm_up=False, observers=[observer])
    with runtime as rt:
        (model,) = rt.start(mlp_servable(os.path.join(exported["root"], "mlp")), version=1).models
        assert model.warmed_up == ()
        x = np.ones(16, np.float32)
        (result,) = rt.infer("mlp", "predict", [{"x": x}])
        np.testing.assert_allclose(
            result["logits"], run_net(exported["nets"]["mlp_v1"], x[None])[0], rtol=1e-5
        )
    (report,) = observer.reports
    assert (report.servable, report.version, report.model, report.compiled) == ("mlp", 1, "mlp", ())


def test_a_bad_warm_up_variable_is_named(monkeypatch):
    monkeypatch.setenv("MINDSERVE_WARM_UP", "sometimes")
    with pytest.raises(ValueError, match=r"MINDSERVE_WARM_UP must be 1 or 0 .*got 'sometimes'"):
        mindserve.Runtime()


def test_a_model_exported_with_batch_size_1_warns_that_it_never_batches(rt, tmp_path, caplog):
    from models import MLP, export, zeros

    export(MLP(seed=1), f"{tmp_path}/one/1/mlp.mindir", zeros(1, 16))
    caplog.set_level(logging.INFO, logger="mindserve")
    (model,) = rt.start(mlp_servable(f"{tmp_path}/one")).models
    assert model.fixed_batch_size == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "fixed batch size of 1, so it will never batch" in message
    assert "Tensor(shape=[None, ...])" in message


def test_the_batch_size_1_warning_is_a_python_warning_without_logging_configured(rt, tmp_path, monkeypatch):
    """With no logging configured it is a MindServeWarning at the user's line (here)."""
    from mindserve._observe import visible
    from models import MLP, export, zeros

    monkeypatch.setattr(visible, "logging_configured", lambda logger: False)
    export(MLP(seed=1), f"{tmp_path}/one/1/mlp.mindir", zeros(1, 16))
    with pytest.warns(
        mindserve.MindServeWarning, match="fixed batch size of 1, so it will never batch"
    ) as caught:
        rt.start(mlp_servable(f"{tmp_path}/one"))
    assert [w.filename for w in caught] == [__file__]


@pytest.mark.warm_up
def test_explicit_buckets_and_fixed_batch_sizes(rt, exported):
    svc = mlp_servable(os.path.join(exported["root"], "mlp"), batching=Batching(buckets=[4, 16]))
    (model,) = rt.start(svc, version=1).models
    assert model.batching.buckets == (4, 16) and model.batching.max_batch_size == 16
    assert model.warmed_up == (4, 16)
    fixed_svc = mlp_servable(os.path.join(exported["root"], "mlp_fixed"))  # another directory: say so
    (fixed,) = rt.start(fixed_svc, replace=True).models
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

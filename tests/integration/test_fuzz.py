"""Hostile requests, generated: only mindserve errors, no hang, good instances still right."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mindserve
from mindserve import InstanceError, MindServeError


def affine(x):
    return x * 2.0 + 1.0


@pytest.fixture(scope="module")
def fuzz_rt():
    svc = mindserve.Servable("fuzz")
    model = svc.model(affine, batching=mindserve.Batching(max_batch_size=8))

    @svc.stage
    def check(x):
        return x

    svc.add_method(lambda x: model(check(x)), name="run")
    with mindserve.Runtime(warm_up=False) as rt:
        rt.start(svc)
        stop = threading.Event()

        def traffic():  # other callers' instances share the batches
            while not stop.is_set():
                (out,) = rt.infer("fuzz", "run", [{"x": np.ones(4, np.float32)}], timeout=30)
                assert np.array_equal(out["output"], np.full(4, 3.0, np.float32))

        threads = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        yield rt
        stop.set()
        for t in threads:
            t.join(30)


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


good_values = st.builds(
    lambda n, fill: np.full(n, fill, np.float32),
    st.integers(min_value=0, max_value=6),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(
        [
            np.zeros((2, 3), np.float64),
            np.zeros(3, np.complex64),
            np.array(["a"], dtype=object),
            np.zeros((0,), np.int8),
            np.empty((2**20, 0), np.float32),  # a huge dimension that holds nothing
            nested(5000),
            {"x": 1},
            object(),
        ]
    ),
)
instances = st.one_of(
    st.builds(lambda v: {"x": v}, good_values),
    st.builds(lambda v: {"x": v}, odd_values),
    st.builds(lambda v: {"y": v}, good_values),  # unknown key, x missing
    st.builds(lambda v, w: {"x": v, "extra": w}, good_values, odd_values),
    st.just({}),
    odd_values,  # not even a dict
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(instances, min_size=1, max_size=6), timeout=st.sampled_from([None, 30, math.inf]))
def test_hostile_requests_get_only_mindserve_errors_and_good_instances_stay_right(fuzz_rt, batch, timeout):
    try:
        results = fuzz_rt.infer("fuzz", "run", batch, return_exceptions=True, timeout=timeout)
    except MindServeError:
        return  # a whole-call error (say, instances not a list): a mindserve error is fine
    assert len(results) == len(batch)
    for instance, result in zip(batch, results):
        if isinstance(result, InstanceError):
            continue
        assert isinstance(result, dict) and set(result) == {"output"}
        # The model got the value as an array (a model without declared inputs takes any).
        np.testing.assert_array_equal(result["output"], affine(np.asarray(instance["x"])))


@pytest.fixture(scope="module")
def mlp_rt(exported):
    import os

    svc = mindserve.Servable("mlp", directory=os.path.join(exported["root"], "mlp"))
    model = svc.model("mlp.mindir")
    svc.add_method(lambda x: model(x), name="predict")
    with mindserve.Runtime() as rt:
        rt.start(svc, version=1)
        yield rt, exported["nets"]["mlp_v1"]


mlp_values = st.one_of(
    st.builds(
        lambda seed: np.random.default_rng(seed).normal(size=16).astype(np.float32), st.integers(0, 2**32 - 1)
    ),
    st.builds(lambda n: np.zeros(n, np.float32), st.integers(0, 40)),
    st.sampled_from(
        [np.zeros(16, np.float64), np.zeros((4, 4), np.float32), np.full(16, np.nan, np.float32), 1.5, "x"]
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(st.builds(lambda v: {"x": v}, mlp_values), min_size=1, max_size=6))
def test_hostile_requests_to_a_real_model_leave_good_instances_equal_to_the_network(mlp_rt, batch):
    from reference import run_net

    rt, net = mlp_rt
    results = rt.infer("mlp", "predict", batch, return_exceptions=True)
    for instance, result in zip(batch, results):
        x = instance["x"]
        good = isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (16,)
        if not good:
            assert isinstance(result, mindserve.InvalidInputError), (x, result)
            continue
        np.testing.assert_allclose(result["output"], run_net(net, x[None])[0], rtol=1e-5, atol=1e-6)

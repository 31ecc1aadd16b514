"""A bad instance fails alone: one test per path an instance takes (Python callables as models).

Every other instance of the same call, and of other callers' calls sharing a batch, gets its
result. Elsewhere, for paths that need more than a callable: a real MindIR model,
tests/integration/test_mindspore_models.py::test_bad_inputs_fail_alone_with_clear_messages; a
network raising in a shared batch, tests/integration/test_faults_mindspore.py; an instance
that crashes its worker process, tests/e2e/test_workers.py::test_a_poison_instance_fails_alone_and_is_not_sent_for_ever;
every kind of exception in every kind of step, tests/unit/test_faults.py.
"""

import threading

import numpy as np
import pytest

import mindserve
from mindserve import InvalidInputError, ModelError
from raising import generator_of
from servables import rejecting_negatives

# -- invalid inputs: checked before any step runs --------------------------------------------------


def test_bad_instances_fail_alone(calc):
    """Missing, unknown and ill-typed inputs fail their own instance only."""
    rt, _ = calc
    good = {"x": np.ones(2, np.float32)}
    instances = [good, {}, {"x": 1.0, "y": 2}, {"x": [1, 2]}, "not a dict", good, {"z": 1}]
    results = rt.infer("calc", "compute", instances, return_exceptions=True)
    assert results[0] == results[5] == {"total": 40.0}
    errors = {i: r for i, r in enumerate(results) if isinstance(r, Exception)}
    assert sorted(errors) == [1, 2, 3, 4, 6]
    assert all(isinstance(e, InvalidInputError) for e in errors.values())
    assert str(errors[1]) == (
        "servable 'calc' version 1, method 'compute', instance 1: missing input 'x'; "
        "method 'compute' takes inputs ['x']"
    )
    assert "unknown input 'y'" in str(errors[2])
    assert "input 'x' must be a numpy array, numpy scalar, bool, int, float, str or bytes; got list" in str(
        errors[3]
    )
    assert "an instance must be a dict of input name to value" in str(errors[4])
    assert errors[6].index == 6 and errors[6].method == "compute" and errors[6].servable == "calc"


class _ReprRaises:
    def __repr__(self):
        raise RuntimeError("repr is broken")


def _deeply_nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [_deeply_nested(100_000), _ReprRaises(), [_ReprRaises()], {"a": _ReprRaises()}],
    ids=["deeply-nested", "repr-raises", "list-of-repr-raises", "dict-of-repr-raises"],
)
def test_hostile_values_fail_their_own_instance_only(rt, value):
    svc = mindserve.Servable("hostile")
    m = svc.model(lambda x: x * 2, name="double")
    svc.add_method(lambda x: m(x), name="run")
    rt.start(svc)
    results = rt.infer("hostile", "run", [{"x": np.float32(1)}, {"x": value}], return_exceptions=True)
    assert results[0]["output"] == 2
    assert isinstance(results[1], mindserve.InvalidInputError), results[1]


class _HostileMapping(dict):
    def keys(self):
        raise RuntimeError("keys are broken")

    def __iter__(self):
        raise RuntimeError("iteration is broken")

    def items(self):
        raise RuntimeError("items are broken")


class _HostileKey(str):
    """Hashes as its text, and raises when compared (as a lookup of that text must)."""

    def __hash__(self):
        return str.__hash__(self)

    def __eq__(self, other):
        raise TypeError("no comparing")


@pytest.mark.parametrize(
    "instance",
    [_HostileMapping(x=1), {_HostileKey("x"): 1}],
    ids=["hostile-mapping", "hostile-key"],
)
def test_hostile_instances_fail_alone_with_a_mindserve_error(rt, instance):
    svc = mindserve.Servable("hostile")
    svc.add_method(lambda x: x, name="same")
    rt.start(svc)
    results = rt.infer("hostile", "same", [{"x": 1}, instance], return_exceptions=True)
    assert results[0] == {"output": 1}
    assert isinstance(results[1], mindserve.InvalidInputError), results[1]


# -- in a stage: per instance, feeding a model, batched --------------------------------------------


def test_a_stage_feeding_a_model_a_dict_or_a_generator_fails_that_instance_alone(rt):
    svc = mindserve.Servable("s")

    @svc.stage
    def prepare(x):
        if x == 1:
            return {"wrong": np.zeros(1)}
        if x == 2:
            return generator_of(np.zeros(1))
        return np.full(1, float(x), np.float32)

    model = svc.model(lambda x: x * 2, name="double")
    svc.add_method(lambda x: model(prepare(x)), name="m")
    rt.start(svc)
    results = rt.infer("s", "m", [{"x": 0}, {"x": 1}, {"x": 2}, {"x": 3}], return_exceptions=True, timeout=10)
    assert results[0]["output"].tolist() == [0.0] and results[3]["output"].tolist() == [6.0]
    for index, got in ((1, "dict"), (2, "generator")):
        assert isinstance(results[index], InvalidInputError)
        assert "model 'double' input 0" in str(results[index]) and f"got {got}" in str(results[index])


def test_a_failing_batch_of_a_batched_stage_fails_only_the_bad_instance(rt):
    """The batch [3, -4] raises; run again one instance at a time, only -4 fails."""
    rt.start(rejecting_negatives(batch_size=2))
    results = rt.infer("s", "m", [{"x": v} for v in [1, 2, 3, -4, 5]], return_exceptions=True)
    assert [r if isinstance(r, dict) else "err" for r in results] == [
        {"output": 1},
        {"output": 2},
        {"output": 3},
        "err",
        {"output": 5},
    ]
    assert isinstance(results[3], mindserve.StageError)
    assert "stage 'check' raised ValueError: negative" in str(results[3])


# -- in a batched model: the batch is run again one instance at a time -----------------------------


def test_model_failure_is_isolated_to_the_bad_instance(calc):
    """A batch that fails is retried instance by instance: only the culprit fails."""
    rt, calls = calc
    xs = [np.ones(2, np.float32), -np.ones(2, np.float32), np.ones(2, np.float32)]
    results = rt.infer("calc", "raw", [{"x": x} for x in xs], return_exceptions=True)
    assert results[0]["y"].tolist() == [10.0, 10.0] and results[2]["y"].tolist() == [10.0, 10.0]
    assert isinstance(results[1], ModelError)
    assert "model 'times_ten' failed: ValueError: negative values are not allowed" in str(results[1])
    assert calls[0] == (3, 2) and len(calls) == 4


def test_bad_instance_in_a_shared_batch_fails_alone(rt):
    svc = mindserve.Servable("s")

    def strict(x):
        if (x < 0).any():
            raise ValueError("negative")
        return x

    m = svc.model(strict)
    svc.add_method(lambda x: m(x), name="f")
    rt.start(svc)
    results = {}
    barrier = threading.Barrier(32)

    def caller(k):
        barrier.wait()
        value = np.float32(-1 if k == 13 else k)
        results[k] = rt.infer("s", "f", [{"x": value}], return_exceptions=True)[0]

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(results[13], mindserve.ModelError)
    assert all(results[k] == {"output": np.float32(k)} for k in range(32) if k != 13)

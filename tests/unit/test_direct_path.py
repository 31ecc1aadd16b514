"""The common call's fast path: a direct method (one model from the method's inputs to its
outputs) over dicts of numpy arrays gives exactly what the general pipeline gives."""

import numpy as np
import pytest

import mindserve
from mindserve import InferenceError, InvalidInputError, ModelError


def servable():
    svc = mindserve.Servable("direct")

    def scale(x):
        if (x < 0).any():
            raise ValueError("negative values are not allowed")
        return x * 2

    def pair(a, b):
        return a + b, a - b

    one = svc.model(scale, name="scale")
    two = svc.model(pair, name="pair", outputs=2)
    svc.add_method(lambda x: one(x), name="direct", outputs="y")
    svc.add_method(lambda a, b: two(a, b), name="direct_pair", outputs=["sum", "diff"])

    @svc.stage
    def same(x):
        return x

    svc.add_method(lambda x: one(same(x)), name="staged", outputs="y")
    svc.add_method(lambda a, b: two(b, a), name="swapped_inputs", outputs=["sum", "diff"])

    @svc.method(outputs=["diff", "sum"])
    def swapped_outputs(a, b):
        total, difference = two(a, b)
        return difference, total

    @svc.method(outputs=["y", "x"])
    def echoes_input(x):
        return one(x), x

    return svc


def test_only_one_model_call_from_inputs_to_outputs_in_order_is_direct():
    methods = servable().methods
    assert methods["direct"].direct and methods["direct_pair"].direct
    for name in ("staged", "swapped_inputs", "swapped_outputs", "echoes_input"):
        assert not methods[name].direct, name


@pytest.fixture
def served(rt):
    rt.start(servable())
    return rt


def test_direct_results_equal_the_general_pipelines(served):
    xs = [np.full(3, i, np.float32) for i in range(5)]
    fast = served.infer("direct", "direct", [{"x": x} for x in xs])
    general = served.infer("direct", "staged", [{"x": x} for x in xs])
    assert (
        [r["y"].tolist() for r in fast]
        == [r["y"].tolist() for r in general]
        == [(x * 2).tolist() for x in xs]
    )
    pairs = served.infer("direct", "direct_pair", [{"a": x, "b": x + 1} for x in xs])
    assert [(p["sum"].tolist(), p["diff"].tolist()) for p in pairs] == [
        ((2 * x + 1).tolist(), [-1.0] * 3) for x in xs
    ]
    swapped = served.infer("direct", "swapped_outputs", [{"a": x, "b": x + 1} for x in xs])
    assert [s["diff"].tolist() for s in swapped] == [[-1.0] * 3] * 5


def test_a_bad_instance_of_a_direct_call_fails_alone_with_its_index(served):
    xs = [np.ones(3, np.float32), -np.ones(3, np.float32), np.ones(3, np.float32)]
    results = served.infer("direct", "direct", [{"x": x} for x in xs], return_exceptions=True)
    assert results[0]["y"].tolist() == results[2]["y"].tolist() == [2.0] * 3
    assert isinstance(results[1], ModelError)
    assert results[1].index == 1 and results[1].method == "direct" and "negative" in str(results[1])
    with pytest.raises(InferenceError) as raised:
        served.infer("direct", "direct", [{"x": x} for x in xs])
    assert list(raised.value.errors) == [1] and isinstance(raised.value.errors[1], ModelError)


def test_instances_that_are_not_all_dicts_of_arrays_take_the_general_path(served):
    """A numpy scalar, a wrong input name or a non-dict among arrays: each such instance gets
    the general path's result or error, and the others their results."""
    good = np.ones(3, np.float32)
    instances = [{"x": good}, {"x": np.float32(3.0)}, {"y": good}, "not a dict", {"x": good}]
    results = served.infer("direct", "direct", instances, return_exceptions=True)
    assert results[0]["y"].tolist() == results[4]["y"].tolist() == [2.0] * 3
    assert float(results[1]["y"]) == 6.0
    assert isinstance(results[2], InvalidInputError) and "unknown input 'y'" in str(results[2])
    assert isinstance(results[3], InvalidInputError) and "dict" in str(results[3])


@pytest.mark.parametrize("caller", ["infer", "infer_async", "ainfer"])
def test_every_entry_point_takes_the_direct_path(served, caller):
    import asyncio

    instances = [{"x": np.full(2, i, np.float32)} for i in range(3)]
    if caller == "infer":
        results = served.infer("direct", "direct", instances)
    elif caller == "infer_async":
        results = served.infer_async("direct", "direct", instances).result(timeout=30)
    else:
        results = asyncio.run(served.ainfer("direct", "direct", instances))
    assert [r["y"].tolist() for r in results] == [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]]


def test_bulk_rows_of_one_array_come_back_as_rows(served):
    rows = np.arange(4096 * 2, dtype=np.float32).reshape(4096, 2)
    results = served.infer("direct", "direct", [{"x": row} for row in rows])
    assert len(results) == 4096
    assert np.array_equal(np.stack([r["y"] for r in results]), rows * 2)


def test_a_model_that_writes_to_its_input_never_changes_the_callers_array():
    """A lone instance runs as a batch of one: a Python model that changes its input in
    place works on a copy, as it does in any other batch."""
    svc = mindserve.Servable("inplace")

    def doubled(x):
        x *= 2
        return x

    model = svc.model(doubled, name="doubled")
    svc.add_method(lambda x: model(x), name="run", outputs="y")
    x = np.arange(4, dtype=np.float32)
    with mindserve.Runtime() as rt:
        rt.start(svc)
        (result,) = rt.infer("inplace", "run", [{"x": x}])
    assert result["y"].tolist() == [0.0, 2.0, 4.0, 6.0]
    assert x.tolist() == [0.0, 1.0, 2.0, 3.0]

"""Running methods: stages, batching and per-instance outcomes (Python callables as models)."""

import threading

import numpy as np
import pytest

import mindserve
from mindserve import InferenceError, ModelError, StageError


def test_results_come_back_in_order(calc):
    rt, calls = calc
    xs = [np.full(2, i, np.float32) for i in range(7)]
    results = rt.infer("calc", "compute", [{"x": x} for x in xs])
    assert results == [{"total": float(((x + 1) * 10).sum())} for x in xs]
    assert calls == [(7, 2)], "the seven instances form one batch"


def test_empty_request(calc):
    rt, _ = calc
    assert rt.infer("calc", "compute", []) == []


def test_default_raises_one_error_carrying_every_outcome(calc):
    rt, _ = calc
    with pytest.raises(InferenceError) as info:
        rt.infer("calc", "compute", [{"x": 1.0}, {"x": "text"}, {"x": 2.0}])
    error = info.value
    assert error.results[0] == {"total": 20.0} and error.results[2] == {"total": 30.0}
    assert list(error.errors) == [1]
    assert isinstance(error.errors[1], StageError)
    assert str(error).startswith("1 of 3 instances failed:")
    assert "stage 'pre' raised TypeError: cannot use text 'text'" in str(error)


def test_inference_error_survives_pickling(calc):
    """An InferenceError sent to another process (multiprocessing, Ray) keeps its message,
    its results and its errors (it once arrived as '0 of 78 instances failed:')."""
    import pickle

    rt, _ = calc
    with pytest.raises(InferenceError) as info:
        rt.infer("calc", "compute", [{"x": 1.0}, {"x": "text"}, {"x": 2.0}])
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert copy.results[0] == {"total": 20.0} and list(copy.errors) == [1]
    assert isinstance(copy.errors[1], StageError) and copy.errors[1].index == 1


def test_stage_errors_fail_only_their_instances_and_serving_goes_on(rt):
    svc = mindserve.Servable("s")

    @svc.stage
    def none_for_odd(x):
        return None if x % 2 else x

    @svc.stage(outputs=2)
    def pair(x):
        return (x, x) if x < 4 else (x,)

    @svc.method(outputs=["a", "b"])
    def m(x):
        return pair(none_for_odd(x))

    rt.start(svc)
    results = rt.infer("s", "m", [{"x": i} for i in range(6)], return_exceptions=True)
    assert results[0] == {"a": 0, "b": 0} and results[2] == {"a": 2, "b": 2}
    assert "stage 'none_for_odd' returned None" in str(results[1])
    assert "stage 'pair' must return 2 values (outputs=2); it returned 1 value" in str(results[4])
    assert rt.infer("s", "m", [{"x": 0}]) == [{"a": 0, "b": 0}]


def test_batched_stage_that_yields_and_that_miscounts(rt):
    svc = mindserve.Servable("s")

    @svc.stage(batch_size=0)
    def doubled(xs):
        for x in xs:
            yield x * 2

    @svc.stage(batch_size=0)
    def too_few(xs):
        return xs[:-1]

    svc.add_method(lambda x: doubled(x), name="ok")
    svc.add_method(lambda x: too_few(x), name="bad")
    rt.start(svc)
    assert rt.infer("s", "ok", [{"x": 1}, {"x": 2}]) == [{"output": 2}, {"output": 4}]
    results = rt.infer("s", "bad", [{"x": 1}, {"x": 2}], return_exceptions=True)
    assert all(isinstance(r, StageError) for r in results)
    assert "was given 2 instances and returned 1 results" in str(results[0])


def test_batched_stage_gets_one_list_per_parameter(rt):
    svc = mindserve.Servable("s")
    seen = []

    @svc.stage(batch_size=4)
    def add(xs, ys):
        seen.append((list(xs), list(ys)))
        return [x + y for x, y in zip(xs, ys)]

    svc.add_method(lambda a, b: add(a, b), name="m")
    rt.start(svc)
    assert rt.infer("s", "m", [{"a": i, "b": 10 * i} for i in range(5)]) == [
        {"output": 11 * i} for i in range(5)
    ]
    assert seen == [([0, 1, 2, 3], [0, 10, 20, 30]), ([4], [40])]


def test_instances_of_different_shapes_are_batched_separately(calc):
    rt, calls = calc
    results = rt.infer(
        "calc",
        "raw",
        [{"x": np.ones(2, np.float32)}, {"x": np.ones(3, np.float32)}, {"x": np.ones(2, np.float32)}],
    )
    assert [r["y"].shape for r in results] == [(2,), (3,), (2,)]
    assert sorted(calls) == [(1, 3), (2, 2)]


def test_large_requests_are_split_into_batches(calc):
    rt, calls = calc
    results = rt.infer("calc", "raw", [{"x": np.float32(i)} for i in range(150)])
    assert [float(r["y"]) for r in results] == [10.0 * i for i in range(150)]
    assert calls == [(64,), (64,), (22,)]


def test_model_output_count_is_checked(rt):
    svc = mindserve.Servable("s")
    model = svc.model(lambda x: (x, x), name="two", outputs=1)
    svc.add_method(lambda x: model(x), name="m")
    rt.start(svc)
    (result,) = rt.infer("s", "m", [{"x": 1.0}], return_exceptions=True)
    assert "model 'two' returned 2 outputs; it is declared with outputs=1" in str(result)


def test_model_without_batch_dim_gets_each_instance(rt):
    svc = mindserve.Servable("s")
    shapes = []
    model = svc.model(lambda x: shapes.append(x.shape) or x.sum(), name="total", with_batch_dim=False)
    svc.add_method(lambda x: model(x), name="m")
    rt.start(svc)
    out = rt.infer("s", "m", [{"x": np.ones((2, 2))}, {"x": np.ones(3)}])
    assert [float(o["output"]) for o in out] == [4.0, 3.0]
    assert shapes == [(2, 2), (3,)]


def test_without_batch_dim_inputs_are_shared_per_batch(rt):
    svc = mindserve.Servable("s")
    seen = []

    def scale(x, factor):
        seen.append((x.shape, factor.shape))
        return x * factor

    model = svc.model(scale, without_batch_dim_inputs=[1])
    svc.add_method(lambda x, f: model(x, f), name="m")
    rt.start(svc)
    two, three = np.full(2, 2.0), np.full(2, 3.0)
    out = rt.infer(
        "s", "m", [{"x": np.ones(2), "f": two}, {"x": np.ones(2), "f": three}, {"x": np.ones(2), "f": two}]
    )
    assert [o["output"].tolist() for o in out] == [[2.0, 2.0], [3.0, 3.0], [2.0, 2.0]]
    assert sorted(seen) == [((1, 2), (2,)), ((2, 2), (2,))]


def test_model_call_inside_a_stage(rt):
    """Model.call runs the model for loops and conditions, through the same runtime path."""
    svc = mindserve.Servable("s")
    inc = svc.model(lambda x: x + 1, name="inc")

    @svc.stage
    def repeat(x, times):
        for _ in range(int(times)):
            x = inc.call(x)
        return x

    @svc.stage
    def maybe(x):
        return inc(x) if x > 0 else x

    svc.add_method(lambda x, n: repeat(x, n), name="loop")
    svc.add_method(lambda x: maybe(x), name="cond")
    rt.start(svc)
    assert rt.infer("s", "loop", [{"x": 1.0, "n": 3}, {"x": 0.0, "n": 0}]) == [
        {"output": 4.0},
        {"output": 0.0},
    ]
    assert rt.infer("s", "cond", [{"x": 1.0}, {"x": -1.0}]) == [{"output": 2.0}, {"output": -1.0}]


def test_model_call_failure_fails_the_stage(rt):
    svc = mindserve.Servable("s")
    model = svc.model(lambda x: x, name="identity")

    @svc.stage
    def bad(x):
        return model.call(x, x)

    svc.add_method(lambda x: bad(x), name="m")
    svc.add_method(lambda x: model(x), name="direct")
    rt.start(svc)
    (result,) = rt.infer("s", "m", [{"x": 1.0}], return_exceptions=True)
    assert isinstance(result, StageError)
    assert str(result) == (
        "servable 's' version 1, method 'm', instance 0: stage 'bad' raised InvalidInputError: "
        "model 'identity' takes 1 input; got 2"
    )


def test_model_call_outside_a_running_stage():
    svc = mindserve.Servable("s")
    model = svc.model(lambda x: x, name="identity")
    with pytest.raises(mindserve.MindServeError, match="can only run inside a stage of a running servable"):
        model.call(1.0)


def test_every_value_type_reaches_a_stage(rt):
    svc = mindserve.Servable("s")
    svc.add_method(lambda v: svc.add_stage(lambda v: type(v).__name__, name="kind")(v), name="m")
    rt.start(svc)
    values = [np.zeros(2), np.float16(1), True, 3, 2.5, "s", b"b"]
    assert [r["output"] for r in rt.infer("s", "m", [{"v": v} for v in values])] == [
        "ndarray",
        "float16",
        "bool",
        "int",
        "float",
        "str",
        "bytes",
    ]


def test_a_model_is_never_entered_by_two_threads(rt):
    """Many threads call infer at once; calls into one model are serialized."""
    svc = mindserve.Servable("s")
    inside, overlaps = [0], []
    guard = threading.Lock()

    def slow_identity(x):
        with guard:
            inside[0] += 1
            if inside[0] > 1:
                overlaps.append(inside[0])
        total = x.copy()
        for _ in range(200):
            total = total + 0
        with guard:
            inside[0] -= 1
        return total

    model = svc.model(slow_identity)
    svc.add_method(lambda x: model(x), name="m")
    rt.start(svc)
    errors, results = [], {}

    def worker(k):
        try:
            out = rt.infer("s", "m", [{"x": np.full(3, k, np.float64)} for _ in range(3)])
            results[k] = [o["output"].tolist() for o in out]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not overlaps
    assert results == {k: [[k] * 3] * 3 for k in range(16)}


def test_model_output_without_batch_dim_fails_clearly(rt):
    svc = mindserve.Servable("s")
    model = svc.model(lambda x: x.sum(), name="total")
    svc.add_method(lambda x: model(x), name="m")
    rt.start(svc)
    results = rt.infer("s", "m", [{"x": np.ones(2)}, {"x": np.ones(2)}], return_exceptions=True)
    assert all(isinstance(r, ModelError) for r in results)
    assert (
        "model 'total': model output 0 has shape (), but its first dimension should be the batch size"
        in str(results[0])
    )


def test_batched_stage_must_return_a_sequence(rt):
    svc = mindserve.Servable("s")

    @svc.stage(batch_size=0)
    def wrong(xs):
        return len(xs)

    svc.add_method(lambda x: wrong(x), name="m")
    rt.start(svc)
    results = rt.infer("s", "m", [{"x": 1}, {"x": 2}], return_exceptions=True)
    assert all(isinstance(r, StageError) for r in results)
    assert "must return or yield one result per instance; it returned int" in str(results[0])


def test_a_large_request_with_one_odd_instance_is_checked_instance_by_instance(rt):
    """Instances of one dtype and shape take a fast path; one odd instance fails alone."""
    svc = mindserve.Servable("s")
    m = svc.model(lambda x: x * 2, name="double")
    svc.add_method(lambda x: m(x), name="m")
    rt.start(svc)
    xs = [np.full(3, k, np.float32) for k in range(100)]
    results = rt.infer("s", "m", [{"x": x} for x in xs])
    assert [r["output"].tolist() for r in results] == [(x * 2).tolist() for x in xs]
    xs[50] = np.zeros(4, np.float32)  # another shape: batched apart, still answered
    xs[70] = [1, 2, 3]  # not an array: fails alone
    results = rt.infer("s", "m", [{"x": x} for x in xs], return_exceptions=True)
    assert results[50]["output"].tolist() == [0.0] * 4
    assert isinstance(results[70], mindserve.InvalidInputError)
    assert all(results[k]["output"].tolist() == [2.0 * k] * 3 for k in range(100) if k not in (50, 70))


def test_model_call_many_with_uneven_instances_fails_cleanly(rt):
    svc = mindserve.Servable("s")
    m = svc.model(lambda x: x, name="same")

    @svc.stage
    def uneven(x):
        return m.call_many([(x,), (x, x)])

    svc.add_method(lambda x: uneven(x), name="m")
    rt.start(svc)
    (result,) = rt.infer("s", "m", [{"x": np.ones(2, np.float32)}], return_exceptions=True)
    assert isinstance(result, mindserve.StageError)
    assert "model 'same' failed: TypeError" in str(result)

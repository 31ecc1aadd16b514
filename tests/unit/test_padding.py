"""Variable-length inputs on Python callables: declaring Padding, grouping by length bucket,
padding, filled masks and lengths, outputs sliced back (the MindSpore proof is in
tests/integration/test_lengths_mindspore.py)."""

import logging
import random
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mindserve
from mindserve import Padding
from mindserve._batching.lengths import Lengths, length_buckets
from mindserve._execution.local import CallableExecutor
from servables import per_token_and_pooled, text_servable, tokens


def test_instances_of_different_lengths_share_one_padded_batch(rt):
    seen = []
    rt.start(text_servable(seen, buckets=[4, 8, 16]))
    xs = [tokens(n, n) for n in (5, 7, 2, 8)]
    results = rt.infer("text", "encode", [{"x": x} for x in xs])
    # 5, 7 and 8 share the bucket 8; 2 is in the bucket 4
    assert sorted(shape for shape, _ in seen) == [(1, 4, 4), (3, 8, 4)]
    masks = {shape: mask for shape, mask in seen}
    assert masks[(3, 8, 4)].tolist() == [[1] * 5 + [0] * 3, [1] * 7 + [0], [1] * 8]
    for x, result in zip(xs, results):
        assert result["tokens"].shape == x.shape
        np.testing.assert_allclose(result["tokens"], x * 2)
        np.testing.assert_allclose(result["pooled"], x.mean(axis=0), rtol=1e-5)


def test_a_too_long_instance_fails_alone_naming_the_limit(rt):
    seen = []
    rt.start(text_servable(seen, buckets=[4, 8]))
    results = rt.infer(
        "text", "encode", [{"x": tokens(3)}, {"x": tokens(9)}, {"x": tokens(0)}], return_exceptions=True
    )
    assert results[0]["tokens"].shape == (3, 4)
    assert isinstance(results[1], mindserve.InvalidInputError)
    assert "length 9 along axis 0; the longest accepted is 8" in str(results[1])
    assert "Padding(max_length=...)" in str(results[1])
    assert isinstance(results[2], mindserve.InvalidInputError) and "length 0" in str(results[2])


def test_lengths_inputs_and_pad_values_are_filled_in(rt):
    seen = []

    def model(x, n):
        seen.append((x.copy(), n.copy()))
        return x.sum(axis=1) - 9 * (x.shape[1] - n)  # undo the padding's 9s

    svc = mindserve.Servable("sum")
    m = svc.model(model, padding=Padding(inputs={0: 0}, lengths={1: 0}, buckets=[4], value=9))
    svc.add_method(lambda x: m(x), name="sum", outputs="s")
    rt.start(svc)
    results = rt.infer("sum", "sum", [{"x": np.arange(1, n + 1, dtype=np.int64)} for n in (1, 3)])
    assert [r["s"] for r in results] == [1, 6]
    ((x, n),) = seen
    assert x.tolist() == [[1, 9, 9, 9], [1, 2, 3, 9]] and n.tolist() == [1, 3] and n.dtype == np.int32


def test_many_threads_each_get_their_own_lengths(rt):
    seen = []
    rt.start(text_servable(seen, max_length=64))
    failures = []

    def caller(k):
        rng = random.Random(k)
        for _ in range(10):
            xs = [tokens(rng.randint(1, 64), rng.randint(0, 10**6)) for _ in range(rng.randint(1, 4))]
            for x, result in zip(xs, rt.infer("text", "encode", [{"x": x} for x in xs])):
                if result["tokens"].shape != x.shape or not np.allclose(
                    result["pooled"], x.mean(0), atol=1e-5
                ):
                    failures.append(x.shape)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert {shape[1] for shape, _ in seen} <= set(length_buckets(64))


def test_declaration_errors_are_named():
    with pytest.raises(mindserve.DefinitionError, match="buckets must end at max_length"):
        Padding(buckets=[8, 16], max_length=32)
    with pytest.raises(mindserve.DefinitionError, match="cannot also be padded inputs"):
        Padding(inputs={0: 0, 1: 0}, mask={1: 0})
    with pytest.raises(mindserve.DefinitionError, match=r"names input.* that are not padded"):
        Padding(inputs={0: 0}, lengths={2: 1})
    with pytest.raises(mindserve.DefinitionError, match=r"padding must be a mindserve\.Padding"):
        mindserve.Servable("s").model(lambda x: x, padding={0: 0})


def test_default_length_buckets():
    """Each bucket at most 1.5x the one below (a length padded by at most half), two per
    doubling, so the warm-up grid stays small."""
    assert length_buckets(512) == (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
    assert length_buckets(100) == (8, 12, 16, 24, 32, 48, 64, 96, 100)
    assert length_buckets(5) == (5,)
    for low, high in zip(length_buckets(4096), length_buckets(4096)[1:]):
        assert low < high <= low * 1.5


def plain_lengths(buckets):
    return Lengths(
        axes={0: 0},
        buckets=buckets,
        values={0: 0},
        masks={},
        lengths={},
        outputs={0: (0, 0)},
        n_inputs=1,
        dtypes={},
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=30),
    st.lists(st.integers(1, 40), min_size=1, max_size=4, unique=True).map(sorted),
    st.integers(1, 8),
)
def test_grouping_answers_every_instance_once_with_its_own_length(lengths, buckets, max_batch):
    """Grouped by key and cut to the batch limit (as the scheduler does), padded and sliced:
    every instance answered once, at its own length; no batch over its limits."""
    from mindserve._batching.shapes import split

    plan = plain_lengths(tuple(buckets))
    instances = [(np.full(n, i, np.float32),) for i, n in enumerate(lengths)]
    good = [i for i, (x,) in enumerate(instances) if plan.check((x,)) is None]
    assert good == [i for i, n in enumerate(lengths) if n <= buckets[-1]]
    answered = []
    for batch in split([plan.key(instances[i]) for i in good], len(good), max_batch):
        assert len(batch) <= max_batch
        indices = [good[b] for b in batch]
        (stacked,), own = plan.stack([instances[i] for i in indices])
        assert stacked.shape[1] in buckets and stacked.shape[1] >= max(lengths[i] for i in indices)
        assert stacked.shape[0] == len(indices)
        real, padded = plan.elements([instances[i] for i in indices])
        assert real == sum(lengths[i] for i in indices) and padded == stacked.size
        for i, (out,) in zip(indices, plan.unstack((stacked,), len(indices), own)):
            assert out.tolist() == [float(i)] * lengths[i]
            answered.append(i)
    assert sorted(answered) == good


def test_padding_waste_is_in_the_batch_log_and_the_metrics(rt):
    seen = []
    rt.start(text_servable(seen, buckets=[4, 8]))
    rt.infer("text", "encode", [{"x": tokens(n)} for n in (5, 7, 2)])
    log = rt.batch_log("text")
    assert sorted((b.size, b.elements, b.padded_elements) for b in log) == [
        (1, 2 * 4, 4 * 4),
        (2, 12 * 4, 16 * 4),
    ]
    (model,) = rt.metrics().servable("text").models
    assert (model.elements, model.padded_elements) == (14 * 4, 20 * 4)


def test_rows_added_to_reach_a_batch_bucket_are_counted_apart_from_length_padding(rt):
    """Three instances of one length bucket run as a batch padded to 4 rows: the waste counts
    the length padding of the 3 real instances; the added row is the batch's padding."""
    seen = []
    svc = mindserve.Servable("text")
    padding = Padding(inputs={0: 0}, mask={1: 0}, outputs={0: 0}, buckets=[4, 8])
    batching = mindserve.Batching(buckets=[1, 2, 4])
    model = svc.model(per_token_and_pooled(seen), outputs=2, padding=padding, batching=batching)
    svc.add_method(lambda x: model(x), name="encode", outputs=["tokens", "pooled"])
    rt.start(svc)
    results = rt.infer("text", "encode", [{"x": tokens(n)} for n in (5, 7, 6)])
    assert [r["tokens"].shape for r in results] == [(5, 4), (7, 4), (6, 4)]
    assert [shape for shape, _ in seen] == [(4, 8, 4)]
    (batch,) = rt.batch_log("text")
    assert (batch.size, batch.padded_to) == (3, 4)
    assert (batch.elements, batch.padded_elements) == (18 * 4, 3 * 8 * 4)
    (model,) = rt.metrics().servable("text").models
    assert (model.padding, model.elements, model.padded_elements) == (1, 18 * 4, 3 * 8 * 4)


def test_models_without_padding_count_no_elements(calc):
    rt, _ = calc
    rt.infer("calc", "raw", [{"x": np.ones(3, np.float32)}])
    (batch,) = rt.batch_log("calc", "times_ten")
    assert batch.elements is None and batch.padded_elements is None


def test_a_test_double_of_a_padded_model_gets_padded_batches(rt):
    """mindserve.testing: a fake standing in for a padded MindIR keeps its Padding (declared
    inputs: the fake reports no shapes), so it sees the batches the model would."""
    from mindserve.testing import replace_models

    svc = mindserve.Servable("text")
    padding = Padding(inputs={0: 0}, mask={1: 0}, outputs={0: 0}, buckets=[4, 8])
    encoder = svc.model("encoder.mindir", outputs=2, padding=padding)
    svc.add_method(lambda x: encoder(x), name="encode", outputs=["tokens", "pooled"])
    seen = []
    rt.start(replace_models(svc, {"encoder": per_token_and_pooled(seen)}))
    xs = [tokens(3), tokens(6)]
    results = rt.infer("text", "encode", [{"x": x} for x in xs])
    assert [r["tokens"].shape for r in results] == [(3, 4), (6, 4)]
    assert [shape for shape, _ in seen] in ([(1, 4, 4), (1, 8, 4)], [(1, 8, 4), (1, 4, 4)])


def test_a_test_double_can_declare_the_padding_of_its_stand_in(rt):
    """mindserve.testing: a MindIR model with no Padding (the load-time probe would pad it)
    replaced by a fake that declares one: the fake sees padded batches with a filled mask,
    and each instance gets its own length back."""
    from mindserve.testing import replace_models

    svc = mindserve.Servable("text")
    encoder = svc.model("encoder.mindir", outputs=2)
    svc.add_method(lambda x: encoder(x), name="encode", outputs=["tokens", "pooled"])
    seen = []
    padding = Padding(inputs={0: 0}, mask={1: 0}, outputs={0: 0}, buckets=[4, 8])
    rt.start(replace_models(svc, {"encoder": per_token_and_pooled(seen)}, padding={"encoder": padding}))
    xs = [tokens(3, 1), tokens(6, 2), tokens(5, 3)]
    results = rt.infer("text", "encode", [{"x": x} for x in xs])
    assert sorted(shape for shape, _ in seen) == [(1, 4, 4), (2, 8, 4)]
    for x, result in zip(xs, results):
        np.testing.assert_allclose(result["tokens"], x * 2)
        np.testing.assert_allclose(result["pooled"], x.mean(axis=0), rtol=1e-5)


def test_a_test_double_refuses_padding_it_cannot_use():
    from mindserve.testing import replace_models

    svc = mindserve.Servable("text")
    svc.model("encoder.mindir", outputs=2)
    svc.model("other.mindir", outputs=2)
    with pytest.raises(
        mindserve.InvalidArgumentError, match=r"padding names \['other'\], which are not replaced"
    ):
        replace_models(svc, {"encoder": lambda x: x}, padding={"other": Padding(inputs={0: 0})})
    with pytest.raises(mindserve.ArgumentTypeError, match=r"must be a mindserve\.Padding; got dict"):
        replace_models(svc, {"encoder": lambda x: x}, padding={"encoder": {0: 0}})


class SpecsExecutor(CallableExecutor):
    """A callable with input specs, as a MindIR file reports them (for the probe)."""

    def __init__(self, function, *specs):
        super().__init__(function)
        self.input_specs = specs


@pytest.mark.parametrize(
    ("function", "padded", "follows"),
    [
        (lambda x: x * 2 + 1, True, {0: (0, 0)}),  # per token: safe, output 0 follows the length
        (lambda x: x.sum(axis=1), True, {}),  # zeros add nothing to a sum
        (lambda x: x.mean(axis=1), False, None),  # the mean counts the padding
        (lambda x: x.max(axis=1), False, None),  # fails on an all-negative instance
        (lambda x: x.min(axis=1), False, None),  # fails on an all-positive instance
        (lambda x: (x * 2 + 1).sum(axis=1), False, None),  # a bias on the padding
    ],
)
def test_the_probe_pads_only_what_padding_does_not_change(function, padded, follows, caplog):
    from mindserve._execution.plan import ModelPlan
    from mindserve._execution.probe import probe, tell
    from mindserve._values import TensorSpec

    caplog.set_level(logging.INFO, logger="mindserve")
    model = mindserve.Servable("s").model(function, name="m")
    executor = SpecsExecutor(function, TensorSpec((None, None, 4), "float32"))
    plan = probe(ModelPlan.of(model, executor.input_specs, "here"), executor, declared=False)
    assert (plan.lengths is not None) == padded
    assert not caplog.records  # the probe only finds; where the model's queue is, tell() says it
    tell(plan)
    (record,) = caplog.records
    if padded:
        assert dict(plan.lengths.outputs) == follows and plan.lengths.source == "probe"
        assert (
            record.levelno == logging.INFO and "a load-time probe found it changes no output" in caplog.text
        )
    else:
        assert record.levelno == logging.WARNING
        assert "padding changed output 0 in a load-time probe" in caplog.text


def test_variable_lengths_through_the_rest_app(rt):
    """mindserve.http: JSON instances of different lengths share a padded batch and come back
    at their own length."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    import json
    import warnings

    from mindserve.http import RestApp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    seen = []
    rt.start(text_servable(seen, buckets=[4, 8]))
    xs = [tokens(5).round(2), tokens(7).round(2)]
    body = {"instances": [{"x": x.tolist()} for x in xs]}
    reply = TestClient(RestApp(rt)).post("/model/text:encode", content=json.dumps(body).encode()).json()
    for x, instance in zip(xs, reply["instances"]):
        np.testing.assert_allclose(np.array(instance["tokens"]), x * 2, rtol=1e-5)
        np.testing.assert_allclose(np.array(instance["pooled"]), x.mean(axis=0), rtol=1e-5)
    assert [shape for shape, _ in seen] == [(2, 8, 4)]

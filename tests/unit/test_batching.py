"""Pure batching helpers: grouping, chunking, padding and slicing."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mindserve
from mindserve._batching import shapes as _batching


def keys(instances, unbatched=()):
    return [_batching.batch_key(arrays, unbatched) for arrays in instances]


def test_batches_split_by_shape_and_dtype():
    a = (np.zeros(3, np.float32),)
    b = (np.zeros(4, np.float32),)
    c = (np.zeros(3, np.float64),)
    assert _batching.split(keys([a, b, a, c, b]), 5, 8) == [[0, 2], [1, 4], [3]]
    assert _batching.split(keys([a, a, a, b]), 4, 2) == [[0, 1], [2], [3]]
    assert _batching.split(None, 5, 2) == [[0, 1], [2, 3], [4]]


def test_unbatched_inputs_split_by_value():
    one, two = np.ones(3, np.float32), np.full(3, 2, np.float32)
    x = np.zeros(3, np.float32)
    instances = [(x, one), (x, two), (x, one.copy())]
    assert _batching.split(keys(instances, [1]), 3, 8) == [[0, 2], [1]]


def test_stack_pads_with_copies_of_the_first_instance():
    instances = [(np.array([1.0]),), (np.array([2.0]),)]
    (stacked,) = _batching.stack(instances, [], pad_to=4)
    assert stacked.tolist() == [[1.0], [2.0], [1.0], [1.0]]


def test_stack_passes_unbatched_inputs_once():
    scale = np.array([3.0])
    instances = [(np.array([1.0]), scale), (np.array([2.0]), scale)]
    stacked, shared = _batching.stack(instances, [1])
    assert stacked.shape == (2, 1) and shared is scale


def test_stack_lends_a_lone_instance_only_when_asked():
    """``copy=False`` (a model that only reads its inputs) passes a lone instance as a view of
    its own array; with padding, several instances or by default, the batch is a new array."""
    x = np.arange(3.0)
    (lent,) = _batching.stack([(x,)], [], copy=False)
    assert lent.shape == (1, 3) and np.shares_memory(lent, x)
    assert not np.shares_memory(_batching.stack([(x,)], [])[0], x)
    assert not np.shares_memory(_batching.stack([(x,)], [], pad_to=2, copy=False)[0], x)
    assert not np.shares_memory(_batching.stack([(x,), (x,)], [], copy=False)[0], x)


def test_unstack_rejects_outputs_without_batch_dim():
    message = _batching.unstack([np.zeros((3, 2)), np.zeros(5)], batch=3, count=2)
    assert message == "model output 1 has shape (5,), but its first dimension should be the batch size 3"


@given(
    n=st.integers(min_value=1, max_value=40),
    size=st.integers(min_value=1, max_value=9),
    fixed=st.booleans(),
)
def test_chunks_stack_unstack_round_trip(n, size, fixed):
    """Every instance comes back once, in order, whatever the batch size and padding."""
    instances = [(np.array([i, -i], np.int64),) for i in range(n)]
    indices = list(range(n))
    back = []
    for chunk in _batching.split(None, len(indices), size):
        assert 1 <= len(chunk) <= size
        batch = [instances[i] for i in chunk]
        pad_to = size if fixed else None
        (stacked,) = _batching.stack(batch, [], pad_to)
        assert stacked.shape[0] == (size if fixed else len(chunk))
        back += _batching.unstack([stacked * 10], stacked.shape[0], len(chunk))
    assert [b[0].tolist() for b in back] == [[10 * i, -10 * i] for i in range(n)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_delay": float("inf")}, r"max_delay must be a finite number of seconds >= 0; got inf"),
        ({"refill_wait": -1}, r"refill_wait must be a finite number of seconds >= 0; got -1"),
        ({"warm_up": "no"}, r"warm_up must be True or False; got 'no'"),
        ({"prune_buckets": 1}, r"prune_buckets must be True or False; got 1"),
        (
            {"max_batch_size": 8, "buckets": (1, 2, 128)},
            r"buckets must end at max_batch_size, the largest batch; got buckets=\(1, 2, 128\) with max_batch_size=8",
        ),
    ],
)
def test_bad_batching_options_are_named(options, message):
    with pytest.raises(mindserve.DefinitionError, match=message):
        mindserve.Batching(**options)


@pytest.mark.parametrize("timeout", [-1, float("nan")])
def test_a_negative_or_nan_timeout_is_named(rt, timeout):
    svc = mindserve.Servable("s")
    stage = svc.add_stage(lambda x: x, name="same")
    svc.add_method(lambda x: stage(x), name="m")
    rt.start(svc)
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds >= 0 or None"):
        rt.infer("s", "m", [{"x": 1}], timeout=timeout)

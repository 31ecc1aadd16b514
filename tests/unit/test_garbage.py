"""Calls leave no reference cycles behind: what a call allocates is freed when it ends, by
reference counting, so the garbage collector has nothing to find. Cycles left by every call
make Python's full collections (tens of milliseconds over MindSpore's heap, every thread
stopped) run again and again under load."""

import asyncio
import gc

import numpy as np
import pytest

import mindserve


@pytest.fixture
def servable():
    svc = mindserve.Servable("g")
    model = svc.model(lambda x: x * 2, name="double")

    @svc.stage
    def shift(x):
        return x + 1

    @svc.stage(batch_size=8)
    def scale(xs):
        return [x * 3 for x in xs]

    svc.add_method(lambda x: model(x), name="direct", outputs="y")
    svc.add_method(lambda x: scale(model(shift(x))), name="staged", outputs="y")
    return svc


def cyclic_garbage(call, times=50):
    """How many objects ``times`` runs of ``call()`` leave that only the collector frees
    (the least of three tries: another test's threads still ending may leave some too).

    What existed before is frozen (``gc.freeze``) so that each collection looks only at what
    the calls made: in a process that imported MindSpore or Ray (an xdist worker), a full
    collection over their heap costs a fraction of a second."""
    call()  # first-call caches
    gc.collect()
    gc.freeze()
    counts = []
    try:
        for _ in range(3):
            gc.collect()
            gc.disable()
            try:
                for _ in range(times):
                    call()
                counts.append(gc.collect())
            finally:
                gc.enable()
    finally:
        gc.unfreeze()
    return min(counts)


@pytest.mark.parametrize("method", ["direct", "staged"])
@pytest.mark.parametrize("api", ["infer", "infer_async", "ainfer"])
def test_a_call_leaves_no_cycles(rt, servable, method, api):
    rt.start(servable)
    instances = [{"x": np.float32(1)}, {"x": np.float32(2)}]
    expected = {"direct": [2, 4], "staged": [12, 18]}[method]

    def call():
        if api == "infer":
            results = rt.infer("g", method, instances)
        elif api == "infer_async":
            future = rt.infer_async("g", method, instances)
            future.add_done_callback(lambda f: None)
            results = future.result(30)
        else:
            results = asyncio.run(rt.ainfer("g", method, instances))
        assert [r["y"] for r in results] == expected

    if api == "ainfer":  # an event loop itself leaves cycles: count only what calls add
        loop_only = cyclic_garbage(lambda: asyncio.run(asyncio.sleep(0)))
        assert cyclic_garbage(call) <= loop_only
    else:
        assert cyclic_garbage(call) == 0


def test_instances_refused_by_checks_leave_no_cycles(rt, servable):
    """(An instance whose stage raised keeps the exception with its traceback, for the
    user to read: that one is freed by the collector.)"""
    rt.start(servable)

    def call():
        future = rt.infer_async("g", "direct", [{"x": np.float32(1)}, {"z": 1}], return_exceptions=True)
        assert isinstance(future.result(30)[1], mindserve.InvalidInputError)

    assert cyclic_garbage(call) == 0

"""Batching across callers through the runtime: async API, deadlines, cancellation, overload.

Python callables stand in for models here; tests/integration/test_batching_mindspore.py uses real ones.
"""

import asyncio
import threading

import numpy as np
import pytest

import mindserve
from mindserve import Batching, DeadlineExceededError, InvalidInputError, OverloadedError
from waiting import wait_until


class Gated:
    """A model (times ten) that records batch sizes and can be held closed."""

    def __init__(self):
        self.sizes = []
        self.seen = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, x):
        self.entered.set()
        self.gate.wait(timeout=30)
        self.sizes.append(len(x))
        self.seen += x.tolist()
        return x * 10


@pytest.fixture
def gated(rt):
    model = Gated()
    svc = mindserve.Servable("g")
    m = svc.model(model, name="times_ten", batching=Batching(max_batch_size=16, max_queue=64))
    svc.add_method(lambda x: m(x), name="f", outputs="y")
    rt.start(svc)
    return rt, model


def hold(rt, model):
    """Occupy the model with one call; return the thread and the future-less caller."""
    model.gate.clear()
    model.entered.clear()
    caller = threading.Thread(target=rt.infer, args=("g", "f", [{"x": np.float32(-1)}]))
    caller.start()
    assert model.entered.wait(10)
    return caller


def test_infer_async_returns_a_future(gated):
    rt, _ = gated
    future = rt.infer_async("g", "f", [{"x": np.float32(2)}])
    assert future.result(timeout=30) == [{"y": np.float32(20)}]


def test_infer_async_raises_lookup_errors_at_once(gated):
    rt, _ = gated
    with pytest.raises(mindserve.MethodNotFoundError):
        rt.infer_async("g", "nope", [])


def test_infer_async_reports_instance_errors_through_the_future(gated):
    rt, _ = gated
    future = rt.infer_async("g", "f", [{"x": [1]}])
    with pytest.raises(mindserve.InferenceError):
        future.result(timeout=30)


def test_ainfer_inside_a_running_event_loop(gated):
    """64 tasks on one loop, each sending one instance, are batched together."""
    rt, model = gated

    async def main():
        return await asyncio.gather(*(rt.ainfer("g", "f", [{"x": np.float32(k)}]) for k in range(64)))

    caller = hold(rt, model)
    task = threading.Thread(target=lambda: results.append(asyncio.run(main())))
    results = []
    task.start()
    wait_until(lambda: rt.status()[0].models[0].batches == 0 and _queued(rt) == 64)
    model.gate.set()
    task.join(30)
    caller.join(30)
    assert [r[0]["y"] for r in results[0]] == [np.float32(10 * k) for k in range(64)]
    assert model.sizes == [1, 16, 16, 16, 16]


def _queued(rt):
    (loaded,) = rt._hosted["g"].versions.values()
    return loaded.models["times_ten"].scheduler.queued


def test_many_threads_are_batched_and_each_gets_its_own_result(gated):
    rt, model = gated
    caller = hold(rt, model)
    results = {}
    threads = [
        threading.Thread(target=lambda k=k: results.update({k: rt.infer("g", "f", [{"x": np.float32(k)}])}))
        for k in range(40)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: _queued(rt) == 40)
    model.gate.set()
    for t in [caller, *threads]:
        t.join(30)
    assert results == {k: [{"y": np.float32(10 * k)}] for k in range(40)}
    assert max(model.sizes) <= 16 and sum(model.sizes) == 41
    info = rt.status()[0].models[0]
    assert info.instances == 41 and info.mean_batch_size == 41 / len(model.sizes)


def test_timeout_drops_queued_instances(gated):
    rt, model = gated
    caller = hold(rt, model)
    with pytest.raises(
        DeadlineExceededError, match=r"servable 'g' version 1, method 'f': model 'times_ten': "
    ):
        rt.infer("g", "f", [{"x": np.float32(7)}], timeout=0.05)
    model.gate.set()
    caller.join(30)
    assert 7.0 not in model.seen


def test_cancelling_a_future_removes_its_queued_instances(gated):
    rt, model = gated
    caller = hold(rt, model)
    future = rt.infer_async("g", "f", [{"x": np.float32(5)}, {"x": np.float32(6)}])
    wait_until(lambda: _queued(rt) == 2)
    assert future.cancel()
    model.gate.set()
    caller.join(30)
    rt.infer("g", "f", [{"x": np.float32(1)}])
    assert 5.0 not in model.seen and 6.0 not in model.seen


def test_cancelling_an_ainfer_task_removes_its_queued_instances(gated):
    rt, model = gated
    caller = hold(rt, model)

    async def main():
        task = asyncio.ensure_future(rt.ainfer("g", "f", [{"x": np.float32(9)}]))
        while _queued(rt) < 1:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    model.gate.set()
    caller.join(30)
    rt.infer("g", "f", [{"x": np.float32(1)}])
    assert 9.0 not in model.seen


def test_full_queue_raises_overloaded_and_loses_nothing(gated):
    rt, model = gated
    caller = hold(rt, model)
    accepted = rt.infer_async("g", "f", [{"x": np.float32(k)} for k in range(60)])
    wait_until(lambda: _queued(rt) == 60)
    with pytest.raises(OverloadedError, match=r"servable 'g' version 1, method 'f': .*the queue is full"):
        rt.infer("g", "f", [{"x": np.float32(k)} for k in range(10)])
    model.gate.set()
    caller.join(30)
    assert [r["y"] for r in accepted.result(30)] == [np.float32(10 * k) for k in range(60)]


def test_batched_stage_batches_across_requests(rt):
    svc = mindserve.Servable("s")
    gate, entered, sizes = threading.Event(), threading.Event(), []

    @svc.stage(batch_size=8)
    def post(xs):
        entered.set()
        gate.wait(30)
        sizes.append(len(xs))
        return [x + 1 for x in xs]

    svc.add_method(lambda x: post(x), name="f")
    rt.start(svc)
    first = threading.Thread(target=rt.infer, args=("s", "f", [{"x": 0}]))
    first.start()
    assert entered.wait(10)
    futures = [rt.infer_async("s", "f", [{"x": k}]) for k in range(10)]
    (loaded,) = rt._hosted["s"].versions.values()
    wait_until(lambda: next(iter(loaded.stage_schedulers.values())).queued == 10)
    gate.set()
    assert [f.result(30) for f in futures] == [[{"output": k + 1}] for k in range(10)]
    first.join(30)
    assert sizes == [1, 8, 2]


def test_a_slow_stage_does_not_hold_the_model(rt):
    """While a batched stage is stuck, other requests still run through the model."""
    svc = mindserve.Servable("s")
    gate, entered = threading.Event(), threading.Event()
    m = svc.model(lambda x: x * 2, name="double")

    @svc.stage(batch_size=4)
    def stuck(xs):
        entered.set()
        gate.wait(30)
        return xs

    svc.add_method(lambda x: stuck(m(x)), name="slow")
    svc.add_method(lambda x: m(x), name="fast")
    rt.start(svc)
    slow = rt.infer_async("s", "slow", [{"x": 1.0}])
    assert entered.wait(10)
    assert rt.infer("s", "fast", [{"x": 3.0}], timeout=10) == [{"output": 6.0}]
    gate.set()
    assert slow.result(30) == [{"output": 2.0}]


def test_model_call_inside_a_batched_stage(rt):
    svc = mindserve.Servable("s")
    m = svc.model(lambda x: x + 1, name="inc")

    @svc.stage(batch_size=0)
    def twice(xs):
        return [m.call(m.call(x)) for x in xs]

    svc.add_method(lambda x: twice(x), name="f")
    rt.start(svc)
    assert rt.infer("s", "f", [{"x": 1.0}, {"x": 5.0}]) == [{"output": 3.0}, {"output": 7.0}]


def test_bad_timeout(gated):
    rt, _ = gated
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
        rt.infer("g", "f", [], timeout="soon")


def test_batching_options_are_checked():
    with pytest.raises(mindserve.DefinitionError, match="max_batch_size must be an int >= 1 or None"):
        Batching(max_batch_size=0)
    with pytest.raises(mindserve.DefinitionError, match="max_delay must be a finite number of seconds >= 0"):
        Batching(max_delay=-1)
    with pytest.raises(mindserve.DefinitionError, match="buckets must be batch sizes"):
        Batching(buckets=[0, 4])
    with pytest.raises(mindserve.DefinitionError, match=r"batching must be a mindserve\.Batching; got dict"):
        mindserve.Servable("s").model(lambda x: x, batching={"max_batch_size": 4})


def test_invalid_inputs_fail_before_queueing(gated):
    rt, model = gated
    results = rt.infer("g", "f", [{"x": "text"}, {"x": np.float32(1)}], return_exceptions=True)
    assert isinstance(results[0], InvalidInputError) and results[1] == {"y": np.float32(10)}
    assert model.seen == [1.0]


def test_deadline_passed_in_a_slow_stage_stops_before_the_model(rt):
    """A call whose deadline passed while a per-instance stage ran never reaches the model."""
    svc = mindserve.Servable("s")
    seen = []
    model = svc.model(lambda x: seen.append(x) or x, name="m")
    slow = threading.Event()

    @svc.stage
    def linger(x):
        slow.wait(0.1)
        return x

    svc.add_method(lambda x: model(linger(x)), name="f")
    rt.start(svc)
    with pytest.raises(DeadlineExceededError, match="model 'm'"):
        rt.infer("s", "f", [{"x": np.float32(1)}], timeout=0.01)
    assert seen == []


def test_ainfer_timeout_drops_queued_instances(gated):
    rt, model = gated
    caller = hold(rt, model)

    async def main():
        with pytest.raises(
            DeadlineExceededError, match=r"servable 'g' version 1, method 'f': model 'times_ten': "
        ):
            await rt.ainfer("g", "f", [{"x": np.float32(8)}], timeout=0.05)

    asyncio.run(main())
    model.gate.set()
    caller.join(30)
    rt.infer("g", "f", [{"x": np.float32(1)}])
    assert 8.0 not in model.seen


def test_async_with_runtime_and_aclose():
    import asyncio

    svc = mindserve.Servable("async-close")
    svc.add_method(lambda x: x, name="same")

    async def main():
        async with mindserve.Runtime() as rt:
            rt.start(svc)
            assert await rt.ainfer("async-close", "same", [{"x": 1}]) == [{"output": 1}]
        with pytest.raises(mindserve.RuntimeClosedError):
            rt.infer("async-close", "same", [{"x": 1}])
        other = mindserve.Runtime()
        other.start(svc)
        await other.aclose(grace=5)
        await other.aclose()  # twice is fine
        with pytest.raises(mindserve.RuntimeClosedError):
            other.infer("async-close", "same", [{"x": 1}])

    asyncio.run(main())


@pytest.fixture
def decoding(rt):
    """A servable whose method runs a per-instance stage (a stand-in for decoding) before
    its model; the stage waits for ``release`` and records the thread it ran in."""
    svc = mindserve.Servable("dec")
    m = svc.model(lambda x: x * 10, name="times_ten")
    release, threads = threading.Event(), []

    @svc.stage
    def decode(x):
        threads.append(threading.get_ident())
        if not release.wait(10):
            raise RuntimeError("the stage was never released")
        if x < 0:
            raise ValueError("negative input")
        return x

    svc.add_method(lambda x: m(decode(x)), name="f", outputs="y")
    rt.start(svc)
    return rt, release, threads


def test_ainfer_runs_per_instance_stages_off_the_event_loop(decoding):
    """The stages only finish once the loop itself releases them: run on the loop, they
    would block it and never be released."""
    rt, release, threads = decoding

    async def main():
        calls = [asyncio.ensure_future(rt.ainfer("dec", "f", [{"x": np.float32(k)}])) for k in range(10)]
        await asyncio.sleep(0)  # the calls start
        while not threads:
            await asyncio.sleep(0.001)
        release.set()  # only the loop sets it
        return threading.get_ident(), await asyncio.gather(*calls)

    loop_thread, results = asyncio.run(main())
    assert [r[0]["y"] for r in results] == [np.float32(10 * k) for k in range(10)]
    assert loop_thread not in threads


def test_ainfer_off_the_loop_reports_errors_deadlines_and_cancels(decoding):
    rt, release, threads = decoding

    async def main():
        release.clear()
        with pytest.raises(DeadlineExceededError):
            await rt.ainfer("dec", "f", [{"x": np.float32(1)}], timeout=0.05)
        task = asyncio.ensure_future(rt.ainfer("dec", "f", [{"x": np.float32(2)}]))
        while len(threads) < 2:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        with pytest.raises(mindserve.InferenceError, match="negative input"):
            await rt.ainfer("dec", "f", [{"x": np.float32(1)}, {"x": np.float32(-1)}])
        return await rt.ainfer("dec", "f", [{"x": np.float32(3)}], return_exceptions=True)

    assert asyncio.run(main()) == [{"y": np.float32(30)}]
    wait_until(
        lambda: not any(v._calls for v in rt._versions)
    )  # every call ended, the cancelled one included

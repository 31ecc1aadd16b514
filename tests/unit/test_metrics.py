"""Metrics: Runtime.metrics() and batch_log() count exactly what callers saw, under load."""

import asyncio
import collections
import random
import threading

import numpy as np
import pytest

import mindserve
from gated import Gate, gated_servable, one_then_three_then_one, queued
from mindserve import BatchReason, Outcome
from servables import faulty_servable
from waiting import wait_until

THREADS = 64
CALLS = 12


def test_every_call_and_instance_is_counted_by_the_outcome_its_caller_saw(rt):
    rt.start(faulty_servable())
    seen_requests, seen_instances = collections.Counter(), collections.Counter()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)
    kinds = {
        mindserve.InvalidInputError: "invalid_input",
        mindserve.StageError: "stage_error",
        mindserve.ModelError: "model_error",
    }

    def caller(seed):
        rng = random.Random(seed)
        start.wait()
        for _ in range(CALLS):
            instances = []
            for _ in range(rng.randint(1, 3)):
                pick = rng.random()
                instances.append(
                    {"y": 0} if pick < 0.1 else {"x": 1 if pick < 0.2 else 2 if pick < 0.3 else 5}
                )
            results = rt.infer("faulty", "run", instances, return_exceptions=True)
            outcomes = [kinds[type(r)] if isinstance(r, mindserve.InstanceError) else "ok" for r in results]
            failed = [o for o in outcomes if o != "ok"]
            with lock:
                seen_instances.update(outcomes)
                seen_requests[failed[0] if failed else "ok"] += 1

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    metrics = rt.metrics().method("faulty", "run")
    assert metrics.requests == dict(seen_requests)
    assert metrics.instances == dict(seen_instances)
    assert metrics.request_count == THREADS * CALLS == metrics.latency.count
    assert set(seen_instances) == {"ok", "invalid_input", "stage_error", "model_error"}
    model = rt.metrics().model("faulty", "double")
    # every instance that passed its stage reached the model, once (a failing batch is rerun
    # instance by instance: those reruns are batches too)
    reached = seen_instances["ok"] + seen_instances["model_error"]
    assert sum(size * n for size, n in model.batch_sizes.items()) == model.instances >= reached
    assert model.batches == sum(model.reasons.values()) == model.queue_wait.count == model.run_time.count
    assert model.queue_depth == 0 and model.dropped == {}


def test_whole_call_outcomes_timed_out_overloaded_cancelled_and_dropped(rt):
    gate = Gate()
    rt.start(gated_servable(gate, max_queue=2, refill_wait=0))
    first = rt.infer_async("s", "m", [{"x": np.array([0.0])}])
    assert gate.entered.wait(10)
    queued_call = rt.infer_async("s", "m", [{"x": np.array([1.0])}])
    cancelled = rt.infer_async("s", "m", [{"x": np.array([2.0])}])
    wait_until(lambda: queued(rt) == 2)
    with pytest.raises(mindserve.OverloadedError):
        rt.infer("s", "m", [{"x": np.array([3.0])}])
    assert cancelled.cancel()
    with pytest.raises(mindserve.DeadlineExceededError):
        rt.infer("s", "m", [{"x": np.array([4.0])}], timeout=0.05)
    gate.open()
    first.result(10), queued_call.result(10)
    wait_until(lambda: rt.metrics().method("s", "m").request_count == 5)
    snapshot = rt.metrics()
    method = snapshot.method("s", "m")
    assert method.requests == {"ok": 2, "overloaded": 1, "cancelled": 1, "timed_out": 1}
    assert method.instances == method.requests
    model = snapshot.model("s", "model")
    assert model.dropped.get("overloaded") == 1 and model.dropped.get("cancelled") == 1
    assert model.instances == 2


def test_ainfer_cancelled_by_its_task_counts_as_cancelled(rt):
    gate = Gate()
    rt.start(gated_servable(gate))

    async def main():
        first = asyncio.ensure_future(rt.ainfer("s", "m", [{"x": np.array([0.0])}]))
        await asyncio.to_thread(gate.entered.wait, 10)
        second = asyncio.ensure_future(rt.ainfer("s", "m", [{"x": np.array([1.0])}]))
        await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        gate.open()
        await first

    asyncio.run(main())
    wait_until(lambda: rt.metrics().method("s", "m").request_count == 2)
    assert rt.metrics().method("s", "m").requests == {"ok": 1, "cancelled": 1}


def test_the_batch_log_says_why_each_batch_ran(rt):
    one_then_three_then_one(rt)
    log = rt.batch_log("s", "model")
    assert [(b.size, b.reason) for b in log] == [
        (1, BatchReason.QUEUE_EMPTY),
        (3, BatchReason.QUEUE_EMPTY),
        (1, BatchReason.INLINE),
    ]
    assert log == rt.batch_log("s") and log[1].queue_wait > 0
    assert [b.at for b in log] == sorted(b.at for b in log)
    model = rt.metrics().model("s", "model")
    assert model.reasons == {"queue_empty": 2, "inline": 1}
    assert model.batch_sizes == {1: 2, 3: 1} and model.mean_batch_size == pytest.approx(5 / 3)


def test_batched_stages_have_metrics_and_a_log(rt):
    svc = mindserve.Servable("st")

    @svc.stage(batch_size=4)
    def scale(x):
        return [v * 3 for v in x]

    svc.add_method(lambda x: scale(x), name="run", outputs="y")
    rt.start(svc)
    rt.infer("st", "run", [{"x": 1}, {"x": 2}])
    assert [b.size for b in rt.batch_log("st", stage="scale")] == [2]
    stage = rt.metrics().model("st", "scale", kind="stage")
    assert (stage.batches, stage.instances) == (1, 2)
    with pytest.raises(
        mindserve.NotFoundError, match=r"no batched stage 'nope'; its batched stages: \['scale'\]"
    ):
        rt.batch_log("st", stage="nope")
    with pytest.raises(mindserve.NotFoundError, match=r"no model 'nope'; its models: \[\]"):
        rt.batch_log("st", "nope")
    with pytest.raises(mindserve.InvalidArgumentError, match="a model or a stage, not both"):
        rt.batch_log("st", "a", stage="b")
    # Issue 20, item 17: a batched stage looked up as a model says how to name it.
    with pytest.raises(
        mindserve.NotFoundError, match=r"Hint: 'scale' is a batched stage: batch_log\(\.\.\., stage='scale'\)"
    ):
        rt.batch_log("st", "scale")
    with pytest.raises(
        mindserve.NotFoundError, match=r"Hint: 'scale' is a batched stage: \.model\(\.\.\., kind='stage'\)"
    ):
        rt.metrics().model("st", "scale")


def test_metrics_of_a_hot_updated_servable_keep_both_versions(rt, tmp_path):
    for version in (1, 2):
        (tmp_path / str(version)).mkdir()
    svc = mindserve.Servable("v", directory=str(tmp_path))
    m = svc.model(lambda x: x, name="same", batching=mindserve.Batching(max_batch_size=2))
    svc.add_method(lambda x: m(x), name="run", outputs="y")
    rt.start(svc, version=1)
    rt.infer("v", "run", [{"x": np.ones(1)}])
    rt.update("v", version=2)
    rt.infer("v", "run", [{"x": np.ones(1)}] * 3)
    wait_until(lambda: not rt.metrics().servable("v", 1).running)
    snapshot = rt.metrics()
    assert [(s.version, s.running) for s in snapshot.servables] == [(1, False), (2, True)]
    assert snapshot.method("v", "run", version=1).instances == {"ok": 1}
    assert snapshot.method("v", "run").instances == {"ok": 3}
    assert snapshot.servable("v", 1).methods[0].latency.p50 is None  # compacted once unloaded
    assert snapshot.model("v", "same").load_seconds is not None
    with pytest.raises(mindserve.NotFoundError, match="no metrics for servable 'w'"):
        snapshot.servable("w")


def test_metrics_can_be_turned_off():
    with mindserve.Runtime(metrics=False) as rt:
        with pytest.raises(mindserve.InvalidArgumentError, match="metrics=False"):
            rt.metrics()
    with pytest.raises(mindserve.InvalidArgumentError, match="metrics must be True or False"):
        mindserve.Runtime(metrics="yes")


def test_outcome_names_are_the_documented_strings():
    assert [o.value for o in Outcome] == [
        "ok",
        "invalid_input",
        "stage_error",
        "model_error",
        "timed_out",
        "cancelled",
        "overloaded",
        "closed",
        "error",
    ]

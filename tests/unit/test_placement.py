"""Placements and the one loading path (_serving/placement.py, _serving/loading.py), and what
a worker process hosts (_workers/hosted.py)."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import mindserve
from mindserve._batching.scheduler import Scheduler
from mindserve._calls import Failure, Request
from mindserve._execution.local import CallableExecutor
from mindserve._serving import loading
from mindserve._serving.model_queue import LoadedModel
from mindserve._serving.placement import InProcess
from mindserve._workers.hosted import host


def _servable(tmp_path, calls=False):
    (tmp_path / "1").mkdir()
    svc = mindserve.Servable("placed", directory=str(tmp_path))
    model = svc.model(lambda x: x * 10, name="m")

    @svc.stage(batch_size=2)
    def total(ys):
        if calls:
            ys = [y for (y,) in model.call_many([(y,) for y in ys])]
        return [float(y.sum()) for y in ys]

    @svc.method(outputs=["total"])
    def compute(x):
        return total(model(x))

    return svc


def test_in_process_a_version_queues_its_models_and_batched_stages(tmp_path):
    loaded = loading.load(_servable(tmp_path).definition(), 0, InProcess((None, 0)), warm_up=False)
    try:
        assert loaded.version == 1 and loaded.device is None
        assert [s.name for s in loaded.stage_schedulers] == ["total"]
        assert loaded.models["m"].scheduler is not None
        assert not loaded.placement.remote
        assert loaded.placement.workers() == ()
    finally:
        loaded.retire()


def test_a_worker_hosts_executors_and_stages_without_any_queue(tmp_path, monkeypatch):
    """What a worker process builds (_workers/hosted.py): no scheduler is ever made, a
    batched stage's Model.call runs the worker's model in this thread, and closing it closes
    the executors."""

    def no_queue(*args, **kwargs):
        raise AssertionError("a worker process made a scheduler")

    monkeypatch.setattr(Scheduler, "__init__", no_queue)
    closed = []
    monkeypatch.setattr(CallableExecutor, "close", lambda self: closed.append(self))
    hosted = host(_servable(tmp_path, calls=True).definition(), 1, (None, 0), warm_up=True)
    try:
        assert list(hosted.executors) == ["m"] and list(hosted.stages) == ["total"]
        assert not any(isinstance(m, LoadedModel) for m in hosted.models.values())
        outcomes = hosted.run_stage("total", [(np.ones(2),), (np.ones(3),)], 5.0)
        assert outcomes == [(20.0,), (30.0,)]  # the sums of Model.call(y), y * 10
        (ready,) = hosted.ready(123).models.values()
        assert ready.plan.warm is not None and ready.report.model == "m" and ready.shapes is None
        assert ready.plan == hosted.models["m"].plan  # the plan the worker runs with, as it is
    finally:
        hosted.close()
    assert closed == [hosted.executors["m"]]


def test_a_version_that_fails_to_load_discards_its_placement(tmp_path):
    discarded = []

    class Failing(InProcess):
        def load_model(self, model, where, warm_up):
            raise mindserve.MindServeError(f"{where}: model '{model.name}' cannot load")

        def discard(self):
            discarded.append(True)

    with pytest.raises(mindserve.MindServeError, match="servable 'placed' version 1: model 'm' cannot load"):
        loading.load(_servable(tmp_path).definition(), 1, Failing((None, 0)), warm_up=False)
    assert discarded == [True]


def test_serving_never_imports_workers_nor_the_runtime_above_it():
    """_runtime.py chooses the placement; _serving serves a version in a process and imports
    neither _workers nor _runtime (at module or function level, or for type checking)."""
    serving = pathlib.Path(mindserve.__file__).parent / "_serving"
    importing = sorted(
        p.name
        for p in serving.glob("*.py")
        if re.search(
            r"^\s*(from|import) mindserve\.(_workers|_runtime)\b", p.read_text(encoding="utf-8"), re.M
        )
    )
    assert importing == []


def test_a_hosted_models_call_gives_what_its_queue_gives(tmp_path):
    """A worker's Model.call (ReadyModel.run, no queue) and a version's model queue give the
    same outcomes: bad, failing and good instances of two shapes, over max_batch_size."""

    def doubled(x):
        if (x < 0).any():
            raise ValueError("negative")
        return x * 2

    (tmp_path / "1").mkdir()
    svc = mindserve.Servable("same", directory=str(tmp_path))
    model = svc.model(doubled, batching=mindserve.Batching(max_batch_size=2))
    svc.add_method(lambda x: model(x), name="f")
    definition = svc.definition()
    instances = [(np.ones(2),), (np.ones(3),), (-np.ones(2),), (np.ones(2), np.ones(2)), (np.full(2, 5.0),)]
    hosted = host(definition, 1, (None, 0), warm_up=False)
    loaded = loading.load(definition, 1, InProcess((None, 0)), warm_up=False)
    try:
        there = hosted.run_model(model, instances, Request(5))
        here = loaded.run_model(model, instances, Request(5))
    finally:
        loaded.retire()
        hosted.close()
    assert [_described(o) for o in there] == [_described(o) for o in here]
    assert [_described(o) for o in there] == [
        [2.0, 2.0],
        [2.0, 2.0, 2.0],
        "ModelError: model 'doubled' failed: ValueError: negative",
        "InvalidInputError: model 'doubled' takes 1 input; got 2",
        [10.0, 10.0],
    ]


def _described(outcome):
    if isinstance(outcome, Failure):
        return f"{outcome.error.__name__}: {outcome.detail}"
    (array,) = outcome
    return array.tolist()


def test_a_model_of_another_servable_is_refused_alike_with_or_without_a_queue(tmp_path):
    definition = _servable(tmp_path).definition()
    stranger = mindserve.Servable("other").model(lambda x: x, name="other")
    hosted = host(definition, 1, (None, 0), warm_up=False)
    loaded = loading.load(definition, 1, InProcess((None, 0)), warm_up=False)
    try:
        for version in (hosted, loaded):
            with pytest.raises(
                mindserve.MindServeError,
                match=r"^model 'other' is not a model of servable 'placed' version 1$",
            ):
                version.run_model(stranger, [(np.ones(2),)], Request(5))
    finally:
        loaded.retire()
        hosted.close()


# -- a model planned once, where it runs: the workers' plans must agree (issue 18) ----------


def _worker_plan(function, batching=None):
    """Model 'm''s plan as a worker makes it: probed on an executor with a dynamic length."""
    from mindserve._execution.plan import ModelPlan
    from mindserve._execution.probe import probe
    from mindserve._values import TensorSpec

    executor = CallableExecutor(function)
    executor.input_specs = (TensorSpec((None, None, 4), "float32"),)
    model = mindserve.Servable("s").model(function, name="m", batching=batching)
    return probe(ModelPlan.of(model, executor.input_specs, "here"), executor, declared=False)


def _readies(*plans):
    from mindserve._workers.protocol import ModelReady, Ready

    return [Ready({"m": ModelReady(plan, None)}, None, 100 + i) for i, plan in enumerate(plans)]


def test_workers_that_plan_alike_give_the_first_plan_pruned_buckets_aside():
    from mindserve._execution.plan import WarmUp
    from mindserve._workers.placement import agreed

    plan = _worker_plan(lambda x: x * 2, mindserve.Batching(max_batch_size=4, prune_buckets=True))
    first = plan.warmed(WarmUp(((1, 0.1), (2, 0.2), (4, 0.5)), (1, 2, 4), (8,)))
    other = plan.warmed(WarmUp(((1, 0.3), (2, 0.1), (4, 0.6)), (2, 4), (8,)))  # its timings pruned 1
    readies = _readies(first, other)
    assert agreed(readies, "servable 's' version 1") is readies[0]


def test_workers_whose_padding_probes_disagree_fail_the_load_and_say_how_to_decide():
    from mindserve._workers.placement import agreed

    padded, exact = _worker_plan(lambda x: x * 2), _worker_plan(lambda x: x.mean(axis=1))
    assert padded.lengths is not None and exact.lengths is None
    with pytest.raises(mindserve.LoadError) as raised:
        agreed(_readies(padded, padded, exact), "servable 's' version 1")
    message = str(raised.value)
    assert message.startswith(
        "servable 's' version 1: model 'm': the workers' load-time padding probes disagree"
    )
    assert "worker 0 pads input(s) [0] to length buckets [8, 12," in message
    assert "worker 2 pads nothing (exact shapes)" in message and "padding=mindserve.Padding(" in message


def test_workers_that_plan_a_model_otherwise_differently_name_what_differs():
    from mindserve._workers.placement import agreed

    mine = _worker_plan(lambda x: x * 2, mindserve.Batching(max_batch_size=8))
    theirs = _worker_plan(lambda x: x * 2, mindserve.Batching(max_batch_size=4))
    with pytest.raises(
        mindserve.LoadError, match=r"worker 0 and worker 1 planned it differently \(batching\)"
    ):
        agreed(_readies(mine, theirs), "here")

"""The fault suite: user code and model files that misbehave, with real threads.

Stages and models that raise every kind of exception (``BaseException``s, and exceptions
whose ``str()`` raises) inside batches shared by several callers, that hang, or that return
the wrong things; ``stop``/``close`` under 64 callers; hot updates repeated under load; a
watched directory with corrupt, truncated, deleted and oddly named versions. Every caller
gets its own result or a mindserve error, and every wait is bounded, so a regression fails
instead of hanging. (tests/test_faults.py holds the single-caller regressions this grew
from; tests/test_fuzz.py the hostile inputs.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time

import numpy as np
import pytest

import mindserve
from conftest import run_net
from mindserve import (
    DeadlineExceededError,
    InvalidInputError,
    LoadError,
    MindServeError,
    ModelError,
    RuntimeClosedError,
    ServableNotFoundError,
    StageError,
)
from test_scheduler import wait_until


class Unprintable(Exception):
    """An exception whose ``str()`` and ``repr()`` raise."""

    def __str__(self):
        raise RuntimeError("str() of Unprintable")

    def __repr__(self):
        raise RuntimeError("repr() of Unprintable")


class CustomBase(BaseException):
    """A user's own ``BaseException``, outside ``Exception``."""


class UnprintableBase(CustomBase):
    def __str__(self):
        raise RuntimeError("str() of UnprintableBase")

    def __repr__(self):
        raise RuntimeError("repr() of UnprintableBase")


EXCEPTIONS = [
    ValueError("bad value -1"),
    Unprintable(),
    KeyboardInterrupt(),
    SystemExit(3),
    GeneratorExit(),
    CustomBase("custom"),
    UnprintableBase(),
]


def name(exc):
    return type(exc).__name__


def array(k):
    return np.array([float(k)], np.float32)


def assert_readable(error, kind, exc):
    """``error`` is a ``kind`` naming the exception's type, and can be printed."""
    assert isinstance(error, kind), error
    text = str(error)
    assert f"{name(exc)}" in text, text
    if isinstance(exc, (Unprintable, UnprintableBase)):
        assert f"{name(exc)} (its str() raised RuntimeError)" in text, text
    assert repr(error)  # never raises, even when the user's exception cannot be printed
    assert error.__cause__ is exc


class BatchSizes(mindserve.Observer):
    def __init__(self):
        self.sizes = []

    def on_batch(self, report):
        self.sizes.append(report.size)


# -- 1. exceptions of every kind -------------------------------------------------------------------


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=name)
def test_a_per_instance_stage_raising_fails_only_its_own_callers_instance(rt, exc):
    """infer_async runs per-instance stages in the runtime's pool: even a KeyboardInterrupt
    there is the instance's StageError. (In the caller's own thread, tests/test_faults.py.)"""

    def boom(x):
        if x == -1:
            raise exc
        return x * 10

    svc = mindserve.Servable("s")
    stage = svc.add_stage(boom, name="boom")
    svc.add_method(lambda x: stage(x), name="m")
    rt.start(svc)
    futures = {k: rt.infer_async("s", "m", [{"x": k}], return_exceptions=True) for k in (1, 2, -1, 3, 4)}
    for k, future in futures.items():
        (result,) = future.result(10)
        if k == -1:
            assert_readable(result, StageError, exc)
            assert f"stage 'boom' raised {name(exc)}" in str(result)
        else:
            assert result == {"output": k * 10}
    if not isinstance(exc, KeyboardInterrupt):  # in the caller's own thread, it reaches the caller
        results = rt.infer("s", "m", [{"x": 5}, {"x": -1}, {"x": 6}], return_exceptions=True, timeout=10)
        assert results[0] == {"output": 50} and results[2] == {"output": 60}
        assert_readable(results[1], StageError, exc)
    assert rt.infer("s", "m", [{"x": 7}], timeout=10) == [{"output": 70}]


def shared_batch_servable(kind, exc, gate, entered, observer_sizes=None):
    """A servable whose step (a batched stage or a callable model) holds a batch holding 0
    until ``gate`` opens, raises ``exc`` for -1, and multiplies by 10 otherwise."""

    def one(x):
        if np.any(x == 0):
            entered.set()
            gate.wait(10)
        if np.any(x == -1):
            raise exc
        return x * 10

    svc = mindserve.Servable("s")
    if kind == "batched stage":
        step = svc.add_stage(lambda xs: [one(x) for x in xs], name="boom", batch_size=8)
    else:
        step = svc.model(one, name="boom", batching=mindserve.Batching(max_batch_size=8))
    svc.add_method(lambda x: step(x), name="m")
    return svc


def step_scheduler(rt, kind):
    loaded = rt._hosted["s"].default()
    if kind == "batched stage":
        (scheduler,) = loaded.stage_schedulers.values()
        return scheduler
    return loaded.models["boom"].scheduler


@pytest.mark.parametrize("kind", ["batched stage", "model"])
@pytest.mark.parametrize("exc", EXCEPTIONS, ids=name)
def test_an_exception_in_a_batch_shared_by_callers_fails_only_the_bad_instance(kind, exc):
    """Eight callers (futures and threads) meet in one batch; one of them holds the instance
    that raises. Only that caller's instance fails, and the executor serves on."""
    gate, entered = threading.Event(), threading.Event()
    sizes = BatchSizes()
    with mindserve.Runtime(observers=[sizes]) as rt:
        rt.start(shared_batch_servable(kind, exc, gate, entered))
        try:
            busy = rt.infer_async("s", "m", [{"x": array(0)}])
            assert entered.wait(10)
            values = [1, 2, -1, 3, 4, 5]
            futures = [rt.infer_async("s", "m", [{"x": array(k)}], return_exceptions=True) for k in values]
            from_threads = {}

            def caller(k):
                from_threads[k] = rt.infer("s", "m", [{"x": array(k)}], return_exceptions=True, timeout=30)

            threads = [threading.Thread(target=caller, args=(k,)) for k in (6, 7)]
            for t in threads:
                t.start()
            wait_until(lambda: step_scheduler(rt, kind).queued == 8)
        finally:
            gate.set()
        assert busy.result(10)[0]["output"].tolist() == [0.0]
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
        outcomes = dict(zip(values, (f.result(10)[0] for f in futures)))
        outcomes.update((k, r[0]) for k, r in from_threads.items())
        assert 8 in sizes.sizes, "the eight callers shared one batch"
        for k, result in outcomes.items():
            if k == -1:
                assert_readable(result, StageError if kind == "batched stage" else ModelError, exc)
            else:
                assert result["output"].tolist() == [k * 10.0], (k, result)
        for _ in range(3):  # the executor survives
            again = rt.infer_async("s", "m", [{"x": array(9)}, {"x": array(-1)}], return_exceptions=True)
            good, bad = again.result(10)
            assert good["output"].tolist() == [90.0] and isinstance(bad, (StageError, ModelError))
        assert rt.infer("s", "m", [{"x": array(8)}], timeout=10)[0]["output"].tolist() == [80.0]


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad"), Unprintable(), KeyboardInterrupt(), SystemExit(3), CustomBase()],
    ids=name,
)
def test_a_mindspore_network_raising_fails_only_the_bad_instance(exc):
    """A real nn.Cell (PyNative), raising from inside MindSpore's Cell call for one caller's
    instance of a shared batch: the other callers get the network's own answers."""
    from mindspore import nn

    from models import MLP

    gate, entered = threading.Event(), threading.Event()

    class Raising(nn.Cell):
        def __init__(self):
            super().__init__()
            self.mlp = MLP(seed=1)

        def construct(self, x):
            values = x.asnumpy()
            if (values == 0).all(axis=1).any():
                entered.set()
                gate.wait(10)
            if (values == -1).all(axis=1).any():
                raise exc
            return self.mlp(x)

    net = Raising()
    svc = mindserve.Servable("cell")
    model = svc.model(net, name="net", batching=mindserve.Batching(max_batch_size=8))
    svc.add_method(lambda x: model(x), name="predict")
    rng = np.random.default_rng(0)
    xs = {k: rng.normal(size=16).astype(np.float32) for k in range(1, 5)}
    xs[-1] = np.full(16, -1, np.float32)
    with mindserve.Runtime(warm_up=False) as rt:
        rt.start(svc)
        try:
            busy = rt.infer_async("cell", "predict", [{"x": np.zeros(16, np.float32)}])
            assert entered.wait(30)
            futures = {
                k: rt.infer_async("cell", "predict", [{"x": x}], return_exceptions=True)
                for k, x in xs.items()
            }
            wait_until(lambda: rt._hosted["cell"].default().models["net"].scheduler.queued == len(xs))
        finally:
            gate.set()
        busy.result(30)
        for k, future in futures.items():
            (result,) = future.result(30)
            if k == -1:
                assert_readable(result, ModelError, exc)
            else:
                np.testing.assert_allclose(
                    result["output"], run_net(net.mlp, xs[k][None])[0], rtol=1e-5, atol=1e-6
                )
        (after,) = rt.infer("cell", "predict", [{"x": xs[1]}], timeout=30)
        np.testing.assert_allclose(after["output"], run_net(net.mlp, xs[1][None])[0], rtol=1e-5, atol=1e-6)


# -- 2. hangs --------------------------------------------------------------------------------------


def hanging_servable(kind, gate, entered):
    """Method ``hang`` goes through a step that waits for ``gate``; method ``other`` through
    a stage and a model of its own."""

    def hang(x):
        entered.set()
        gate.wait(30)
        return x

    svc = mindserve.Servable("s")
    if kind == "stage":
        step = svc.add_stage(hang, name="hang")
    elif kind == "batched stage":
        step = svc.add_stage(lambda xs: [hang(x) for x in xs], name="hang", batch_size=4)
    else:
        step = svc.model(hang, name="hang")
    plus = svc.add_stage(lambda x: x + 1, name="plus")
    double = svc.model(lambda x: x * 2, name="double")
    svc.add_method(lambda x: step(x), name="hang")
    svc.add_method(lambda x: double(plus(x)), name="other")
    return svc


def run_loop(coroutine, outcome):
    try:
        outcome.append(asyncio.run(coroutine))
    except BaseException as exc:
        outcome.append(exc)


@pytest.mark.parametrize("kind", ["batched stage", "model"])
def test_a_hanging_step_times_out_every_kind_of_caller_and_close_returns(kind):
    gate, entered = threading.Event(), threading.Event()
    rt = mindserve.Runtime()
    try:
        rt.start(hanging_servable(kind, gate, entered))
        first = rt.infer_async("s", "hang", [{"x": array(1)}], timeout=0.3)
        assert entered.wait(10)
        with pytest.raises(DeadlineExceededError, match=r"timeout of 0\.3 s"):
            first.result(10)
        with pytest.raises(DeadlineExceededError):
            rt.infer("s", "hang", [{"x": array(2)}], timeout=0.2)
        outcome = []
        loop = threading.Thread(
            target=run_loop, args=(rt.ainfer("s", "hang", [{"x": array(3)}], timeout=0.2), outcome)
        )
        loop.start()
        loop.join(10)
        assert not loop.is_alive() and isinstance(outcome[0], DeadlineExceededError), outcome
        for _ in range(3):  # other methods keep working
            assert rt.infer("s", "other", [{"x": array(4)}], timeout=10)[0]["output"].tolist() == [10.0]
        closing = threading.Thread(target=rt.close, kwargs={"grace": 0.2})
        closing.start()
        closing.join(10)
        assert not closing.is_alive(), "close() waited for a step that hangs"
        with pytest.raises(RuntimeClosedError):
            rt.infer("s", "other", [{"x": array(4)}])
    finally:
        gate.set()
        rt.close()


def test_a_hanging_per_instance_stage_blocks_only_its_own_call_and_close_returns():
    """The stage hangs in the runtime's pool (infer_async): other methods keep working, and
    close() returns after its grace period."""
    gate, entered = threading.Event(), threading.Event()
    rt = mindserve.Runtime()
    try:
        rt.start(hanging_servable("stage", gate, entered))
        stuck = rt.infer_async("s", "hang", [{"x": array(1)}])
        assert entered.wait(10)
        for _ in range(3):
            assert rt.infer("s", "other", [{"x": array(4)}], timeout=10)[0]["output"].tolist() == [10.0]
        closing = threading.Thread(target=rt.close, kwargs={"grace": 0.2})
        closing.start()
        closing.join(10)
        assert not closing.is_alive(), "close() waited for a stage that hangs"
    finally:
        gate.set()
        rt.close()
    with pytest.raises(RuntimeClosedError):  # close() gave up on it after its grace period
        stuck.result(10)


@pytest.mark.parametrize("ending", ["timeout", "close"])
def test_an_infer_async_call_fails_while_its_per_instance_stage_hangs(ending):
    """Its timeout, or close()'s grace period, ends the call though the stage still runs on
    the pool (whatever the stage returns later is discarded)."""
    gate, entered = threading.Event(), threading.Event()
    rt = mindserve.Runtime()
    try:
        rt.start(hanging_servable("stage", gate, entered))
        stuck = rt.infer_async("s", "hang", [{"x": array(1)}], timeout=0.2 if ending == "timeout" else None)
        assert entered.wait(10)
        if ending == "close":
            rt.close(grace=0.2)
        try:
            error = stuck.exception(2)
        except TimeoutError:
            error = None
        assert isinstance(error, DeadlineExceededError if ending == "timeout" else RuntimeClosedError), error
    finally:
        gate.set()
        rt.close()


# -- 3. wrong return types -------------------------------------------------------------------------


def generator_of(x):
    yield x


MODEL_RETURNS = {
    "None": (lambda x: None, "output 0 is NoneType; a callable model must return a numpy array"),
    "object": (lambda x: object(), "output 0 is object;"),
    "generator": (lambda x: generator_of(x), "output 0 is generator;"),
    "dict with wrong keys": (lambda x: {"wrong": x}, "output 0 is dict;"),
    "str": (lambda x: "text", "has shape (), but its first dimension should be the batch size"),
    "scalar": (lambda x: 3.0, "has shape (), but its first dimension should be the batch size"),
    "batch too long": (lambda x: np.concatenate([x, x]), "should be the batch size"),
    "batch too short": (lambda x: x[:0], "should be the batch size"),
    "three outputs": (lambda x: (x, x, x), "returned 3 outputs; it is declared with outputs=1"),
    "no output": (lambda x: (), "returned 0 outputs"),
}


@pytest.mark.parametrize("returned", list(MODEL_RETURNS))
def test_a_model_returning_wrong_things_fails_each_callers_instances_clearly(rt, returned):
    function, expected = MODEL_RETURNS[returned]
    svc = mindserve.Servable("s")
    model = svc.model(function, name="wrong")
    svc.add_method(lambda x: model(x), name="m")
    rt.start(svc)
    futures = [
        rt.infer_async("s", "m", [{"x": array(k)}, {"x": array(k + 1)}], return_exceptions=True, timeout=10)
        for k in range(0, 8, 2)
    ]
    results = rt.infer("s", "m", [{"x": array(9)}], return_exceptions=True, timeout=10)
    for outcome in [f.result(10) for f in futures] + [results]:
        for index, error in enumerate(outcome):
            assert isinstance(error, ModelError), error
            assert f"instance {index}: model 'wrong'" in str(error) and expected in str(error), str(error)


STAGE_RETURNS = {
    "None": (lambda x: None, "returned a single NoneType"),
    "dict with wrong keys": (lambda x: {"c": x, "d": x}, "returned a single dict"),
    "generator": (lambda x: generator_of(x), "returned a single generator"),
    "three values": (lambda x: (x, x, x), "returned 3 values"),
    "one value": (lambda x: x, "returned a single int"),
    "None among the values": (lambda x: (x, None), "returned None among its outputs"),
}


@pytest.mark.parametrize("returned", list(STAGE_RETURNS))
@pytest.mark.parametrize("batched", [False, True], ids=["per instance", "batched"])
def test_a_stage_returning_wrong_things_fails_each_callers_instances_clearly(rt, returned, batched):
    """A stage declared with two outputs; batched, each of its per-instance results is wrong."""
    function, expected = STAGE_RETURNS[returned]
    svc = mindserve.Servable("s")
    if batched:
        stage = svc.add_stage(lambda xs: [function(x) for x in xs], name="wrong", outputs=2, batch_size=4)
    else:
        stage = svc.add_stage(function, name="wrong", outputs=2)
    svc.add_method(lambda x: stage(x), name="m", outputs=["a", "b"])
    rt.start(svc)
    every_instance_fails_in_its_stage(rt, "stage 'wrong'", expected)


def every_instance_fails_in_its_stage(rt, where, expected):
    """Three infer_async callers sharing batches, then a lone infer: each instance of each
    gets its own StageError, naming its index, then ``where``, and saying ``expected``."""
    futures = [
        rt.infer_async("s", "m", [{"x": k}, {"x": k + 1}], return_exceptions=True, timeout=10)
        for k in (0, 2, 4)
    ]
    for outcome in [f.result(10) for f in futures] + [rt.infer("s", "m", [{"x": 9}], return_exceptions=True)]:
        for index, error in enumerate(outcome):
            assert isinstance(error, StageError), error
            assert f"instance {index}: {where}" in str(error) and expected in str(error), str(error)


BATCHED_STAGE_RETURNS = {
    "None": (lambda xs: None, "it returned NoneType"),
    "dict with wrong keys": (lambda xs: {"wrong": xs}, "it returned dict"),
    "str": (lambda xs: "ab", "it returned str"),
    "an array": (lambda xs: np.asarray(xs), "it returned ndarray"),
    "too few": (lambda xs: xs[1:], "returned 0 results"),
    "too many": (lambda xs: xs + xs, "returned more than 1 results"),
    "an endless generator": (lambda xs: iter(int, 1), "returned more than 1 results"),
    "None per instance": (lambda xs: [None] * len(xs), "stage 'wrong' returned None"),
}


@pytest.mark.parametrize("returned", list(BATCHED_STAGE_RETURNS))
def test_a_batched_stage_returning_wrong_things_fails_each_callers_instances_clearly(rt, returned):
    function, expected = BATCHED_STAGE_RETURNS[returned]
    svc = mindserve.Servable("s")
    stage = svc.add_stage(function, name="wrong", batch_size=4)
    svc.add_method(lambda x: stage(x), name="m")
    rt.start(svc)
    every_instance_fails_in_its_stage(rt, "", expected)


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


# -- 4. stop() and close() under 64 callers --------------------------------------------------------

CALLERS = 64


def start_callers(rt, how, outcomes):
    """64 callers of the gated method, each with its own value; returns the threads to join."""

    def one(k):
        return rt.infer("s", "m", [{"x": array(k)}], timeout=60)

    if how == "threads":

        def caller(k):
            try:
                outcomes[k] = one(k)
            except BaseException as exc:
                outcomes[k] = exc

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
        for t in threads:
            t.start()
        return threads
    if how == "futures":
        futures = [rt.infer_async("s", "m", [{"x": array(k)}], timeout=60) for k in range(CALLERS)]

        def collect():
            for k, future in enumerate(futures):
                try:
                    outcomes[k] = future.result(30)
                except BaseException as exc:
                    outcomes[k] = exc

        collector = threading.Thread(target=collect)
        collector.start()
        return [collector]

    async def tasks():
        async def caller(k):
            try:
                outcomes[k] = await rt.ainfer("s", "m", [{"x": array(k)}], timeout=60)
            except BaseException as exc:
                outcomes[k] = exc

        await asyncio.gather(*(caller(k) for k in range(CALLERS)))

    loop = threading.Thread(target=asyncio.run, args=(tasks(),))
    loop.start()
    return [loop]


def runtime_threads(before):
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.name.startswith("mindserve") and t.name != "mindserve:deadlines"
    ]  # the deadline alarm serves the whole process


@pytest.mark.parametrize("how", ["threads", "futures", "asyncio"])
@pytest.mark.parametrize("ending", ["close", "stop"])
def test_stop_or_close_with_64_callers_in_flight(how, ending):
    """One call is inside the (gated) model, 64 callers wait in its queue. ``close``
    with a short grace fails them all with RuntimeClosedError; ``stop`` lets them finish.
    Either way every caller returns, and every thread the runtime started ends."""
    from gated import Gate, gated_servable

    before = set(threading.enumerate())
    gate = Gate()
    rt = mindserve.Runtime()
    outcomes: dict = {}
    joiners = []
    try:
        rt.start(gated_servable(gate, max_batch_size=8))
        busy = rt.infer_async("s", "m", [{"x": array(-1)}])
        assert gate.entered.wait(10)
        joiners = start_callers(rt, how, outcomes)
        scheduler = rt._hosted["s"].default().models["model"].scheduler
        wait_until(lambda: scheduler.queued == CALLERS)
        if ending == "close":
            closing = threading.Thread(target=rt.close, kwargs={"grace": 0.2})
            closing.start()
            closing.join(10)
            assert not closing.is_alive(), "close() outlived its grace period"
        else:
            rt.stop()
            with pytest.raises(ServableNotFoundError):
                rt.infer("s", "m", [{"x": array(0)}])
            gate.open()
        for t in joiners:
            t.join(30)
        assert not any(t.is_alive() for t in joiners), "a caller hung"
    finally:
        gate.open()
        rt.close()
        for t in joiners:
            t.join(30)
    outcomes[-1] = busy.exception(10) or busy.result(10)
    assert sorted(outcomes) == list(range(-1, CALLERS))
    for k, outcome in outcomes.items():
        if ending == "close":
            assert isinstance(outcome, RuntimeClosedError), (k, outcome)
        else:
            assert outcome[0]["output"].tolist() == [float(k)], (k, outcome)
    wait_until(lambda: not runtime_threads(before))


# -- 5. hot updates under load ---------------------------------------------------------------------


def test_ten_hot_updates_under_16_callers_never_fail_or_mix_versions(rt, exported, tmp_path):
    """Versions 1 and 2 of a real MindIR model swap back and forth ten times while 16 threads
    call; each answer is one version's, and calls made between two updates get the one the
    last update made the default."""
    root = tmp_path / "mlp"
    shutil.copytree(os.path.join(exported["root"], "mlp"), root)
    svc = mindserve.Servable("mlp", directory=str(root))
    mlp = svc.model("mlp.mindir", batching=mindserve.Batching(max_batch_size=4))  # 3 compiles a load
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    rt.start(svc, version=1)
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=16).astype(np.float32) for _ in range(16)]
    expected = {v: run_net(exported["nets"][f"mlp_v{v}"], np.stack(xs)) for v in (1, 2)}
    answers, failures = [], []
    stop = threading.Event()

    def caller(k):
        while not stop.is_set():
            started = time.monotonic()
            try:
                (answer,) = rt.infer("mlp", "predict", [{"x": xs[k]}], timeout=60)
            except BaseException as exc:
                failures.append(exc)
                return
            answers.append((k, started, time.monotonic(), answer["logits"]))

    def wait_for_calls_made_after(since):
        count = len(answers)
        wait_until(lambda: sum(a[1] > since for a in answers[count:]) >= 8 or failures, timeout=60)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(16)]
    updates = []  # (began, ended, version)
    try:
        for t in threads:
            t.start()
        since = time.monotonic()
        for i in range(11):
            wait_for_calls_made_after(since)  # then the next update
            if i == 10:
                break
            version = 2 if i % 2 == 0 else 1
            began = time.monotonic()
            assert rt.update("mlp", version=version).version == version
            since = time.monotonic()
            updates.append((began, since, version))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    assert not any(t.is_alive() for t in threads)
    checked = 0
    windows = [
        (ended, next_began, v)
        for (_, ended, v), (next_began, _, _) in zip(updates, [*updates[1:], (float("inf"), 0, 0)])
    ]
    for k, started, ended, logits in answers:
        versions = [v for v in (1, 2) if np.allclose(logits, expected[v][k], rtol=1e-5, atol=1e-6)]
        assert versions, f"an answer from neither version for caller {k}"
        for after, before, v in windows:
            if started > after and ended < before:
                assert versions == [v], (k, versions, v)
                checked += 1
    assert checked >= 10 * 8, "calls between updates were checked against the current version"
    status = rt.servable_status("mlp")
    assert status.default_version == 1 and [i.version for i in status.versions] == [1]


# -- 6. the watcher facing a hostile directory ------------------------------------------------------


def watched_mlp(root):
    svc = mindserve.Servable("mlp", directory=str(root))
    mlp = svc.model("mlp.mindir", batching=mindserve.Batching(max_batch_size=4))
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    return svc


def publish(root, version, data):
    """Write a version directory whole: into another name, then renamed to its number."""
    staging = root / f"{version}.tmp"
    staging.mkdir()
    (staging / "mlp.mindir").write_bytes(data)
    staging.rename(root / str(version))


def assert_serves(rt, exported, version_net):
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    (answer,) = rt.infer("mlp", "predict", [{"x": x}], timeout=30)
    np.testing.assert_allclose(
        answer["logits"], run_net(exported["nets"][version_net], x[None])[0], rtol=1e-5, atol=1e-6
    )


def test_the_watcher_survives_corrupt_truncated_deleted_and_oddly_named_versions(rt, exported, tmp_path):
    root = tmp_path / "mlp"
    good = {v: open(os.path.join(exported["root"], "mlp", str(v), "mlp.mindir"), "rb").read() for v in (1, 2)}
    (root / "1").mkdir(parents=True)
    (root / "1" / "mlp.mindir").write_bytes(good[1])
    rt.start(watched_mlp(root), watch=True, poll_interval=0.02)
    corrupt = np.random.default_rng(2).bytes(len(good[1]))
    for odd in ("²", "①", "01", "-1", "1.0", "0", "٣", "99 "):
        (root / odd).mkdir()
        (root / odd / "mlp.mindir").write_bytes(corrupt)  # loading any of these would fail
    (root / "98").write_bytes(good[2])  # a file named like a version

    def failed_on(version):
        status = rt.servable_status("mlp")
        return status.last_error_version == version

    publish(root, 2, corrupt)  # random bytes
    wait_until(lambda: failed_on(2))
    status = rt.servable_status("mlp")
    assert isinstance(status.last_error, LoadError) and "version 2" in str(status.last_error)
    assert status.watching and status.default_version == 1
    publish(root, 3, good[2][: len(good[2]) // 2])  # truncated
    wait_until(lambda: failed_on(3))
    assert isinstance(rt.servable_status("mlp").last_error, LoadError)
    assert rt.servable_status("mlp").watching
    assert_serves(rt, exported, "mlp_v1")
    publish(root, 4, good[2])
    wait_until(lambda: rt.servable_status("mlp").default_version == 4)
    assert_serves(rt, exported, "mlp_v2")
    shutil.rmtree(root / "4")  # deleted while loaded: its model is in memory, it serves on
    for _ in range(3):
        assert_serves(rt, exported, "mlp_v2")
    publish(root, 5, good[1])
    wait_until(lambda: rt.servable_status("mlp").default_version == 5)
    assert_serves(rt, exported, "mlp_v1")
    status = rt.servable_status("mlp")
    assert status.watching and [i.version for i in status.versions] == [5]


def test_a_version_deleted_while_the_watcher_loads_it_is_reported_and_the_next_one_loads(
    rt, exported, tmp_path, monkeypatch
):
    from mindserve._serving import loading

    root = tmp_path / "mlp"
    good = open(os.path.join(exported["root"], "mlp", "1", "mlp.mindir"), "rb").read()
    (root / "1").mkdir(parents=True)
    (root / "1" / "mlp.mindir").write_bytes(good)
    rt.start(watched_mlp(root), watch=True, poll_interval=0.02)
    original = loading.load
    entered, go_on = threading.Event(), threading.Event()

    def held_load(definition, version, *args, **kwargs):
        if version == 2:  # the watcher has picked version 2: hold it before it reads the files
            entered.set()
            go_on.wait(10)
        return original(definition, version, *args, **kwargs)

    monkeypatch.setattr(loading, "load", held_load)
    try:
        publish(root, 2, good)
        assert entered.wait(10)
        shutil.rmtree(root / "2")
    finally:
        go_on.set()
    wait_until(lambda: rt.servable_status("mlp").last_error_version == 2)
    status = rt.servable_status("mlp")
    assert isinstance(status.last_error, MindServeError) and status.watching and status.default_version == 1
    publish(root, 3, good)
    wait_until(lambda: rt.servable_status("mlp").default_version == 3)
    assert_serves(rt, exported, "mlp_v1")
    assert rt.servable_status("mlp").watching

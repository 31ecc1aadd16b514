"""Faults in user code, with real threads: every caller gets its own result or a mindserve error.

Stages and models (Python callables) that raise every kind of exception (``BaseException``s,
and exceptions whose ``str()`` raises) inside batches shared by several callers, that hang, or
that return the wrong things; ``stop``/``close`` under 64 callers; and the single-caller
regressions this suite grew from (faults that once wedged callers: timeouts lost inside
``Model.call``, a runtime used after ``fork()``). Every wait is bounded, so a regression fails
instead of hanging. Real MindSpore networks and model files that misbehave:
tests/integration/test_faults_mindspore.py; hostile inputs: tests/integration/test_fuzz.py;
"a bad instance fails alone", path by path: tests/unit/test_bad_instances.py.
"""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

import mindserve
from gated import Gate, gated_servable
from mindserve import (
    DeadlineExceededError,
    ModelError,
    RuntimeClosedError,
    ServableNotFoundError,
    StageError,
)
from raising import EXCEPTIONS, array, assert_readable, generator_of, name
from servables import rejecting_negatives
from waiting import wait_until


class BatchSizes(mindserve.Observer):
    def __init__(self):
        self.sizes = []

    def on_batch(self, report):
        self.sizes.append(report.size)


# -- 1. exceptions of every kind -------------------------------------------------------------------


@pytest.mark.parametrize("exc", [*EXCEPTIONS, asyncio.CancelledError()], ids=name)
def test_a_per_instance_stage_raising_fails_only_its_own_callers_instance(rt, exc):
    """infer_async runs per-instance stages in the runtime's pool: even a KeyboardInterrupt
    there is the instance's StageError. (A KeyboardInterrupt in the caller's own thread reaches
    the caller: section 5.)"""

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


# -- 5. regressions: faults that once wedged a single caller --------------------------------------

BASE_EXCEPTIONS = [SystemExit(3), KeyboardInterrupt(), asyncio.CancelledError(), GeneratorExit()]


def ids(exc):
    return type(exc).__name__


class Raising:
    """Raises ``exc`` for the input -1; returns its input otherwise."""

    def __init__(self, exc):
        self.exc = exc

    def __call__(self, x):
        if np.any(np.asarray(x) == -1):
            raise self.exc
        return x


@pytest.mark.parametrize("exc", BASE_EXCEPTIONS, ids=ids)
def test_a_base_exception_in_a_batched_stage_never_kills_its_executor(rt, exc):
    svc = mindserve.Servable("s")
    raising = Raising(exc)
    stage = svc.add_stage(lambda xs: [raising(x) for x in xs], name="boom", batch_size=4)
    svc.add_method(lambda x: stage(x), name="m")
    rt.start(svc)
    for _ in range(3):  # the executor thread survives each time
        results = rt.infer("s", "m", [{"x": 1}, {"x": -1}], return_exceptions=True, timeout=10)
        assert results[0] == {"output": 1}
        assert isinstance(results[1], StageError) and type(exc).__name__ in str(results[1])
    assert rt.infer("s", "m", [{"x": 5}], timeout=10) == [{"output": 5}]


@pytest.mark.parametrize("exc", BASE_EXCEPTIONS, ids=ids)
def test_a_base_exception_in_a_callable_model_on_its_executor_thread(rt, exc):
    """The model is busy, so the bad call queues and runs on the executor thread."""
    gate, entered = threading.Event(), threading.Event()
    raising = Raising(exc)

    def model(x):
        if np.any(x == 7):
            entered.set()
            gate.wait(10)
        return raising(x)

    svc = mindserve.Servable("s")
    m = svc.model(model, batching=mindserve.Batching(max_batch_size=1))
    svc.add_method(lambda x: m(x), name="m")
    rt.start(svc)
    busy = rt.infer_async("s", "m", [{"x": np.array([7.0])}])
    assert entered.wait(10)
    queued = rt.infer_async("s", "m", [{"x": np.array([-1.0])}], return_exceptions=True)
    gate.set()
    assert busy.result(10)[0]["output"].tolist() == [7.0]
    (failed,) = queued.result(10)
    assert isinstance(failed, ModelError) and type(exc).__name__ in str(failed)
    assert rt.infer("s", "m", [{"x": np.array([2.0])}], timeout=10)[0]["output"].tolist() == [2.0]


@pytest.mark.parametrize("kind", ["stage", "model"])
def test_keyboard_interrupt_in_the_callers_own_thread_reaches_the_caller(rt, kind):
    svc = mindserve.Servable("s")
    if kind == "stage":
        step = svc.add_stage(Raising(KeyboardInterrupt()), name="boom")
    else:
        step = svc.model(Raising(KeyboardInterrupt()))
    svc.add_method(lambda x: step(x), name="m")
    rt.start(svc)
    with pytest.raises(KeyboardInterrupt):
        rt.infer("s", "m", [{"x": np.array([-1.0])}], timeout=10)
    assert rt.infer("s", "m", [{"x": np.array([1.0])}], timeout=10)[0]["output"].tolist() == [1.0]


def test_a_batched_stage_failing_for_one_caller_spares_every_other_caller(rt):
    """Many callers share batches; only the instances that are bad fail."""
    rt.start(rejecting_negatives(batch_size=8))
    futures = [
        rt.infer_async("s", "m", [{"x": -k if k % 5 == 0 else k}], return_exceptions=True)
        for k in range(1, 101)
    ]
    for k, future in enumerate(futures, start=1):
        (result,) = future.result(30)
        if k % 5 == 0:
            assert isinstance(result, StageError)
        else:
            assert result == {"output": k}


def test_model_call_inside_a_stage_keeps_the_callers_timeout(rt):
    """The model is busy; a stage's ``m.call`` waits for it no longer than the call may."""
    gate = Gate()
    svc = mindserve.Servable("s")
    m = svc.model(gate, name="blocking")

    @svc.stage
    def calls_model(x):
        return m.call(x)

    svc.add_method(lambda x: m(x), name="occupy")
    svc.add_method(lambda x: calls_model(x), name="m")
    rt.start(svc)
    occupying = rt.infer_async("s", "occupy", [{"x": np.array([1.0])}])
    assert gate.entered.wait(10)
    errors = []

    def caller():
        try:
            rt.infer("s", "m", [{"x": np.array([2.0])}], timeout=0.2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join(5)
    alive = thread.is_alive()
    gate.open()
    thread.join(10)
    occupying.result(10)
    assert not alive, "the call waited past its timeout for the busy model"
    assert len(errors) == 1 and isinstance(errors[0], DeadlineExceededError), errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_runtime_used_in_a_forked_child_raises_instead_of_hanging(rt):
    svc = mindserve.Servable("s")
    stage = svc.add_stage(lambda x: x, name="same")
    svc.add_method(lambda x: stage(x), name="m")
    rt.start(svc)
    assert rt.infer("s", "m", [{"x": 1}]) == [{"output": 1}]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what happened, then leave at once
        try:
            try:
                rt.infer("s", "m", [{"x": 1}], timeout=5)
                message = b"no error"
            except RuntimeClosedError as exc:
                message = b"closed: " + str(exc).encode()
            except BaseException as exc:
                message = f"other: {exc!r}".encode()
            os.write(write, message)
        finally:
            os._exit(0)
    os.close(write)
    _, _status = os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    assert message.startswith("closed: "), message
    assert "fork" in message
    assert rt.infer("s", "m", [{"x": 2}]) == [{"output": 2}], "the parent's runtime still serves"


def test_pending_infer_async_futures_hold_no_thread_and_batch_fully():
    """1,000 futures with a pool of 2 threads: all reach the model's queue, batches are full."""
    gate = Gate()
    observer = BatchSizes()
    with mindserve.Runtime(async_workers=2, observers=[observer]) as rt:
        rt.start(gated_servable(gate))
        threads_before = threading.active_count()
        first = rt.infer_async("s", "m", [{"x": np.array([0.0])}])
        assert gate.entered.wait(10)
        futures = [rt.infer_async("s", "m", [{"x": np.array([float(k)])}]) for k in range(1, 1001)]
        scheduler = rt._hosted["s"].default().models["model"].scheduler
        deadline = threading.Event()
        for _ in range(1000):
            if scheduler.queued == 1000:
                break
            deadline.wait(0.01)
        assert scheduler.queued == 1000, "every pending call reached the model's queue"
        assert threading.active_count() <= threads_before + 3
        gate.open()
        assert first.result(30)[0]["output"].tolist() == [0.0]
        for k, future in enumerate(futures, start=1):
            assert future.result(30)[0]["output"].tolist() == [float(k)]
    assert observer.sizes[0] == 1 and max(observer.sizes) == 64
    assert len(observer.sizes) == 1 + 16, observer.sizes  # 1,000 = 15 x 64 + 40


def test_an_infer_async_timeout_fires_while_the_model_is_busy(rt):
    gate = Gate()
    rt.start(gated_servable(gate))
    first = rt.infer_async("s", "m", [{"x": np.array([0.0])}])
    assert gate.entered.wait(10)
    late = rt.infer_async("s", "m", [{"x": np.array([1.0])}], timeout=0.1)
    with pytest.raises(
        DeadlineExceededError, match=r"servable 's' version 1, method 'm': .*timeout of 0\.1 s"
    ) as raised:
        late.result(5)
    assert (raised.value.servable, raised.value.version, raised.value.method) == ("s", 1, "m")
    assert str(raised.value).count("servable 's'") == 1, "the location is said once"
    gate.open()
    first.result(10)


def test_close_without_grace_returns_when_a_call_was_turned_away_by_a_retired_version(monkeypatch):
    """A call that found a version just as close() retired it must not keep close() waiting."""
    from mindserve._serving import running

    inside, go_on = threading.Event(), threading.Event()
    original = running.LoadedServable.enter

    def held_enter(self, request):
        inside.set()
        go_on.wait(10)
        return original(self, request)

    monkeypatch.setattr(running.LoadedServable, "enter", held_enter)
    rt = mindserve.Runtime()
    svc = mindserve.Servable("s")
    stage = svc.add_stage(lambda x: x, name="same")
    svc.add_method(lambda x: stage(x), name="m")
    rt.start(svc)
    errors = []

    def caller():
        try:
            rt.infer("s", "m", [{"x": 1}])
        except BaseException as exc:
            errors.append(exc)

    calling = threading.Thread(target=caller)
    calling.start()
    assert inside.wait(10)
    closing = threading.Thread(target=rt.close, kwargs={"grace": None})
    closing.start()
    wait_until(lambda: rt._closed)
    go_on.set()
    closing.join(10)
    calling.join(10)
    assert not closing.is_alive(), "close(grace=None) waited for a call that never started"
    assert len(errors) == 1 and isinstance(errors[0], RuntimeClosedError)


def test_model_call_inside_a_batched_stage_keeps_the_callers_timeout(rt):
    gate = Gate()
    svc = mindserve.Servable("s")
    m = svc.model(gate, name="blocking")

    @svc.stage(batch_size=4)
    def calls_model(xs):
        return [m.call(x) for x in xs]

    svc.add_method(lambda x: m(x), name="occupy")
    svc.add_method(lambda x: calls_model(x), name="m")
    rt.start(svc)
    occupying = rt.infer_async("s", "occupy", [{"x": np.array([1.0])}])
    assert gate.entered.wait(10)
    late = rt.infer_async("s", "m", [{"x": np.array([2.0])}], timeout=0.2)
    with pytest.raises(DeadlineExceededError):
        late.result(5)
    gate.open()
    occupying.result(10)


def test_ainfer_waiting_on_a_busy_model_fails_when_close_grace_passes():
    gate = Gate()
    rt = mindserve.Runtime()
    rt.start(gated_servable(gate))
    occupying = rt.infer_async("s", "m", [{"x": np.array([1.0])}])
    assert gate.entered.wait(10)

    async def waiting():
        return await rt.ainfer("s", "m", [{"x": np.array([2.0])}])

    outcome = []
    loop_thread = threading.Thread(target=lambda: outcome.append(_run_catching(waiting)))
    loop_thread.start()
    wait_until(
        lambda: (
            rt._hosted.get("s") is not None
            and rt._hosted["s"].default().models["model"].scheduler.queued == 1
        )
    )
    rt.close(grace=0.1)
    loop_thread.join(5)
    alive = loop_thread.is_alive()
    gate.open()
    loop_thread.join(10)
    with pytest.raises(RuntimeClosedError):
        occupying.result(10)
    assert not alive, "ainfer waited for the busy model past the grace period"
    assert isinstance(outcome[0], RuntimeClosedError)


def _run_catching(coroutine_function):
    try:
        return asyncio.run(coroutine_function())
    except BaseException as exc:
        return exc


def test_done_callbacks_of_infer_async_never_run_in_a_scheduler_thread(rt):
    gate = Gate()
    rt.start(gated_servable(gate))
    ran_in = []
    done = threading.Event()
    future = rt.infer_async("s", "m", [{"x": np.array([1.0])}])
    future.add_done_callback(lambda f: (ran_in.append(threading.current_thread().name), done.set()))
    gate.open()
    assert done.wait(10)
    assert not ran_in[0].startswith("mindserve:"), ran_in

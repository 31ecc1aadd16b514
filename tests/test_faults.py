"""Faults that once wedged callers: BaseExceptions in user code, timeouts lost inside
``Model.call``, rollback, and a runtime used after ``fork()``. Python callables stand in
for models; every wait is bounded, so a regression fails instead of hanging."""

import asyncio
import os
import threading

import numpy as np
import pytest

import mindserve
from gated import Gate, gated_servable
from mindserve import DeadlineExceededError, ModelError, RuntimeClosedError, StageError
from test_pipeline import rejecting_negatives
from test_scheduler import wait_until

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


@pytest.mark.parametrize("exc", [e for e in BASE_EXCEPTIONS if not isinstance(e, KeyboardInterrupt)], ids=ids)
def test_a_base_exception_in_a_per_instance_stage_fails_only_its_instance(rt, exc):
    svc = mindserve.Servable("s")
    stage = svc.add_stage(Raising(exc), name="boom")
    svc.add_method(lambda x: stage(x), name="m")
    rt.start(svc)
    results = rt.infer("s", "m", [{"x": 1}, {"x": -1}], return_exceptions=True, timeout=10)
    assert results[0] == {"output": 1}
    assert isinstance(results[1], StageError) and f"raised {type(exc).__name__}" in str(results[1])
    assert rt.infer("s", "m", [{"x": 2}], timeout=10) == [{"output": 2}]


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


def test_rollback_makes_the_older_version_the_default(rt, tmp_path):
    from test_hot_update import versioned

    for v in (1, 2, 3):
        os.makedirs(tmp_path / "v" / str(v))
    svc = versioned(str(tmp_path / "v"))
    rt.start(svc, version=2)
    rt.load(svc, version=3)
    info = rt.update("v", version=1)
    assert info.is_default and info.version == 1
    status = rt.servable_status("v")
    assert status.default_version == 1
    assert [i.version for i in status.versions] == [1, 2]
    assert [i.version for i in rt.status() if i.is_default] == [1]


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


class BatchSizes(mindserve.Observer):
    def __init__(self):
        self.sizes = []

    def on_batch(self, report):
        self.sizes.append(report.size)


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

"""The observer interface: what a runtime reports about batches, drops, calls and versions."""

import numpy as np
import pytest

import mindserve
from gated import Gate, gated_servable, one_then_three_then_one, queued
from mindserve import BatchReason, DropReason, Observer
from mindserve._observe.observer import ObserverHub
from waiting import wait_until


class Recorder(Observer):
    def __init__(self):
        self.batches, self.drops, self.calls, self.versions = [], [], [], []

    def on_batch(self, report):
        self.batches.append(report)

    def on_drop(self, report):
        self.drops.append(report)

    def on_call(self, report):
        self.calls.append(report)

    def on_version(self, event):
        self.versions.append((event.kind, event.version))


def test_batches_say_why_they_formed_and_how_they_ran():
    recorder = Recorder()
    with mindserve.Runtime(observers=[recorder]) as rt:
        one_then_three_then_one(rt)
    sizes = [(b.size, b.reason) for b in recorder.batches]
    assert sizes == [(1, BatchReason.QUEUE_EMPTY), (3, BatchReason.QUEUE_EMPTY), (1, BatchReason.INLINE)]
    assert all(b.where == "servable 's' version 1: model 'model'" and b.failed == 0 for b in recorder.batches)
    assert recorder.batches[1].queue_wait > 0 and recorder.batches[0].run_seconds > 0
    assert [(c.method, c.instances, c.failed, c.error) for c in recorder.calls] == [("m", 1, 0, None)] * 5
    assert [kind for kind, _ in recorder.versions] == ["loaded", "swapped", "unloaded"]


def test_drops_and_refusals_are_reported_with_their_reason():
    recorder = Recorder()
    gate = Gate()
    with mindserve.Runtime(observers=[recorder]) as rt:
        rt.start(gated_servable(gate, max_queue=2))
        first = rt.infer_async("s", "m", [{"x": np.array([0.0])}])
        assert gate.entered.wait(10)
        late = rt.infer_async("s", "m", [{"x": np.array([1.0])}], timeout=0.05)
        with pytest.raises(mindserve.DeadlineExceededError):
            late.result(10)
        cancelled = rt.infer_async("s", "m", [{"x": np.array([2.0])}])
        wait_until(lambda: queued(rt) == 2)
        cancelled.cancel()
        full = rt.infer_async("s", "m", [{"x": np.array([3.0])}, {"x": np.array([4.0])}])
        wait_until(lambda: len(recorder.drops) == 2)  # the late and the cancelled instances made room
        assert queued(rt) == 2
        with pytest.raises(mindserve.OverloadedError):
            rt.infer("s", "m", [{"x": np.array([5.0])}])
        gate.open()
        first.result(10)
        full.result(10)
    reasons = sorted((d.reason, d.count) for d in recorder.drops)
    assert (DropReason.OVERLOADED, 1) in reasons
    assert (DropReason.DEADLINE, 1) in reasons and (DropReason.CANCELLED, 1) in reasons
    errors = [c.error for c in recorder.calls]
    assert "DeadlineExceededError" in errors and "OverloadedError" in errors


def test_an_observer_that_raises_is_logged_and_serving_goes_on(caplog):
    class Broken(Observer):
        def on_batch(self, report):
            raise RuntimeError("observer bug")

    with mindserve.Runtime(observers=[Broken()]) as rt:
        rt.start(gated_servable(Gate()))
        rt.stop("s")
        svc = mindserve.Servable("t")
        m = svc.model(lambda x: x)
        svc.add_method(lambda x: m(x), name="m")
        rt.start(svc)
        assert rt.infer("t", "m", [{"x": np.array([1.0])}])[0]["output"].tolist() == [1.0]
    assert "observer bug" in caplog.text


def test_the_hub_only_calls_methods_an_observer_overrides():
    class OnlyCalls(Observer):
        def on_call(self, report):
            pass

    hub = ObserverHub([OnlyCalls()])
    assert hub.wants("on_call") and not hub.wants("on_batch")
    with pytest.raises(TypeError, match=r"an observer must be a mindserve\.Observer; got function"):
        ObserverHub([lambda report: None])


@pytest.mark.parametrize("exc", [SystemExit(1), KeyboardInterrupt()], ids=lambda e: type(e).__name__)
def test_an_observer_raising_a_base_exception_never_stops_serving(caplog, exc):
    class Exiting(Observer):
        def on_batch(self, report):
            raise exc

    with mindserve.Runtime(observers=[Exiting()]) as rt:
        svc = mindserve.Servable("t")
        m = svc.model(lambda x: x)
        svc.add_method(lambda x: m(x), name="m")
        rt.start(svc)
        assert rt.infer("t", "m", [{"x": np.array([1.0])}], timeout=10)[0]["output"].tolist() == [1.0]
        future = rt.infer_async("t", "m", [{"x": np.array([2.0])}])
        assert future.result(10)[0]["output"].tolist() == [2.0]
    assert type(exc).__name__ in caplog.text


@pytest.mark.parametrize(
    ("observers", "message"),
    [
        (
            Observer(),
            r"observers must be a list of mindserve\.Observer; got Observer\. Hint: observers=\[my_observer\]",
        ),
        (None, r"observers must be a list of mindserve\.Observer; got NoneType"),
        ([object()], r"an observer must be a mindserve\.Observer; got object"),
    ],
)
def test_bad_observers_are_named(observers, message):
    with pytest.raises(TypeError, match=message):
        mindserve.Runtime(observers=observers)


def test_removing_what_was_never_added_is_named(rt):
    with pytest.raises(ValueError, match="is not an observer of this runtime"):
        rt.remove_observer(Observer())
    with pytest.raises(ValueError, match="is not a listener of this runtime"):
        rt.remove_listener(print)

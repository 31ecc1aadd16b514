"""infer_async's done-callbacks: the callbacks of one batch's futures run together on the
runtime's pool, after every future of the batch is complete."""

import logging
import threading
import weakref

import numpy as np

from gated import Gate, gated_servable


def queued_behind_a_gate(rt, count):
    """``count`` infer_async futures queued behind a batch held in the gated model, so that
    they run as one batch once the gate opens."""
    gate = Gate()
    rt.start(gated_servable(gate))
    first = rt.infer_async("s", "m", [{"x": np.array([0.0])}])
    assert gate.entered.wait(10)
    futures = [rt.infer_async("s", "m", [{"x": np.array([float(i)])}]) for i in range(count)]
    return gate, first, futures


def test_a_callback_may_wait_for_another_future_of_its_batch(rt):
    gate, first, futures = queued_behind_a_gate(rt, 16)
    seen = {}
    all_ran = threading.Event()

    def waits_for_the_next(index):
        def callback(future):
            following = futures[(index + 1) % len(futures)]
            seen[index] = (
                threading.current_thread().name,
                float(following.result(timeout=10)[0]["output"][0]),
            )
            if len(seen) == len(futures):
                all_ran.set()

        return callback

    for index, future in enumerate(futures):
        future.add_done_callback(waits_for_the_next(index))
    gate.open()
    assert all_ran.wait(20), f"only {sorted(seen)} of the callbacks ran"
    assert first.result(10)
    assert {index: value for index, (_, value) in seen.items()} == {
        index: float((index + 1) % 16) for index in range(16)
    }
    assert not any(name.startswith("mindserve:") for name, _ in seen.values())


def test_a_raising_callback_does_not_stop_the_others_of_its_batch(rt, caplog):
    gate, _, futures = queued_behind_a_gate(rt, 8)
    ran = []
    all_ran = threading.Event()

    def callback(future):
        ran.append(future)
        if len(ran) == len(futures):
            all_ran.set()
        if len(ran) % 2:
            raise RuntimeError("a user's callback failed")

    for future in futures:
        future.add_done_callback(callback)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        gate.open()
        assert all_ran.wait(20), f"{len(ran)} of {len(futures)} callbacks ran"
        for future in futures:
            future.result(10)
    failures = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert len(failures) == 4 and "exception calling callback" in failures[0].getMessage()


def test_each_future_of_a_batch_is_freed_once_its_callbacks_ran(rt):
    """The pool lets go of a batch's futures one by one: a callback that submits the next
    call (the usual way to keep calls in flight) finds the earlier futures already freed,
    so one batch's calls are never all alive at once."""
    gate, _, futures = queued_behind_a_gate(rt, 8)
    alive_then = []
    all_ran = threading.Event()
    refs = [weakref.ref(future) for future in futures]

    def callback(future):
        index = next(i for i, ref in enumerate(refs) if ref() is future)
        alive_then.append(sum(ref() is not None for ref in refs[:index]))
        if len(alive_then) == len(refs):
            all_ran.set()

    for future in futures:
        future.add_done_callback(callback)
    del future, futures
    gate.open()
    assert all_ran.wait(20)
    assert alive_then == [0] * 8

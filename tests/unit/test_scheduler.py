"""The cross-caller scheduler, with a fake batch function (fast; no MindSpore)."""

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mindserve import DeadlineExceededError, OverloadedError
from mindserve._batching.scheduler import Scheduler
from mindserve._calls import CancelledCall, Request
from mindserve._outcomes import Failure
from waiting import wait_until


class FakeModel:
    """Records every batch; optionally blocks until ``gate`` is set."""

    def __init__(self, blocked=False):
        self.batches = []
        self.threads = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not blocked:
            self.gate.set()
        self.inside = 0
        self.overlaps = 0
        self._guard = threading.Lock()

    def __call__(self, values, requests=None):
        with self._guard:
            self.inside += 1
            self.overlaps += self.inside > 1
        self.entered.set()
        self.gate.wait(timeout=30)
        self.batches.append(list(values))
        self.threads.append(threading.current_thread())
        with self._guard:
            self.inside -= 1
        return [("done", v) for v in values]


def scheduler(model, **options):
    options.setdefault("max_batch_size", 8)
    return Scheduler("fake", model, **options)


def occupy(sched, model, value="first"):
    """Start a call that holds the (blocked) model; return its thread."""
    caller = threading.Thread(target=run, args=(sched, [value]))
    caller.start()
    assert model.entered.wait(10)
    return caller


def call_in_threads(call, sizes):
    """``call(k, n)`` in a thread per request size; its answers by k, and any errors."""
    answers, errors = {}, []

    def caller(k, n):
        try:
            answers[k] = call(k, n)
        except Exception as exc:  # pragma: no cover - reported by the caller's assertions
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k, n)) for k, n in enumerate(sizes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers, errors


def run(sched, values, timeout=None, keys=None):
    request = Request(timeout)
    return request.wait(sched.submit(request, values, keys), "fake")


def test_a_lone_caller_runs_at_once_in_its_own_thread():
    model = FakeModel()
    sched = scheduler(model)
    assert run(sched, [1, 2, 3]) == [("done", 1), ("done", 2), ("done", 3)]
    assert model.batches == [[1, 2, 3]]
    assert model.threads == [threading.current_thread()]
    sched.close()


def test_instances_queue_while_busy_and_are_batched_across_callers():
    model = FakeModel(blocked=True)
    sched = scheduler(model, max_batch_size=4)
    first = occupy(sched, model, "a")
    results = {}
    callers = [threading.Thread(target=lambda k=k: results.update({k: run(sched, [k])})) for k in range(10)]
    for t in callers:
        t.start()
    wait_until(lambda: sched.queued == 10)
    model.gate.set()
    for t in [first, *callers]:
        t.join(10)
    assert results == {k: [("done", k)] for k in range(10)}
    assert [len(b) for b in model.batches] == [1, 4, 4, 2]
    assert model.overlaps == 0
    sched.close()


def test_large_requests_are_split_into_batches():
    model = FakeModel()
    sched = scheduler(model, max_batch_size=4)
    assert run(sched, list(range(10))) == [("done", v) for v in range(10)]
    assert [len(b) for b in model.batches] == [4, 4, 2]


def test_instances_with_different_keys_never_share_a_batch():
    model = FakeModel()
    sched = scheduler(model)
    values = list(range(6))
    run(sched, values, keys=["even" if v % 2 == 0 else "odd" for v in values])
    assert sorted(model.batches) == [[0, 2, 4], [1, 3, 5]]


def test_deadline_drops_queued_instances_before_the_model():
    model = FakeModel(blocked=True)
    sched = scheduler(model)
    blocker = occupy(sched, model)
    with pytest.raises(DeadlineExceededError, match=r"the call.s timeout of 0\.05 s passed"):
        run(sched, ["late"], timeout=0.05)
    model.gate.set()
    blocker.join(10)
    sched.close()
    sched.join(10)
    assert model.batches == [["first"]], "the timed-out instance never reached the model"


def test_cancelled_request_is_dropped_and_its_waiter_woken():
    model = FakeModel(blocked=True)
    sched = scheduler(model)
    blocker = occupy(sched, model)
    request = Request()
    ticket = sched.submit(request, ["cancelled"])
    threading.Timer(0.01, request.abandon, args=("cancelled",)).start()
    with pytest.raises(CancelledCall):
        request.wait(ticket, "fake")
    model.gate.set()
    blocker.join(10)
    sched.close()
    sched.join(10)
    assert model.batches == [["first"]]


def test_a_full_queue_refuses_new_calls_and_keeps_the_old_ones():
    model = FakeModel(blocked=True)
    sched = scheduler(model, max_queue=3)
    blocker = occupy(sched, model)
    queued = sched.submit(Request(), ["q1", "q2"])
    with pytest.raises(
        OverloadedError, match=r"the queue is full \(2 instances waiting, max_queue=3; this call brings 2\)"
    ):
        sched.submit(Request(), ["x", "y"])
    model.gate.set()
    blocker.join(10)
    assert Request().wait(queued, "fake") == [("done", "q1"), ("done", "q2")]


def test_timed_out_instances_free_their_queue_places():
    model = FakeModel(blocked=True)
    sched = scheduler(model, max_queue=2)
    occupy(sched, model)
    with pytest.raises(DeadlineExceededError):
        run(sched, ["a", "b"], timeout=0.01)
    ticket = sched.submit(Request(), ["c", "d"])
    model.gate.set()
    assert Request().wait(ticket, "fake") == [("done", "c"), ("done", "d")]


def test_max_delay_waits_to_fill_a_batch():
    model = FakeModel()
    sched = scheduler(model, max_batch_size=4, max_delay=10.0)
    callers = [threading.Thread(target=run, args=(sched, [k])) for k in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(30)
    assert [sorted(b) for b in model.batches] == [[0, 1, 2, 3]]
    assert model.threads[0] is not threading.current_thread()


def test_a_raising_batch_function_fails_its_items_and_serving_goes_on():
    calls = []

    def flaky(values, requests):
        calls.append(values)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [("done", v) for v in values]

    sched = scheduler(flaky)
    (outcome,) = run(sched, ["x"])
    assert isinstance(outcome, Failure) and "RuntimeError: boom" in outcome.detail
    assert run(sched, ["y"]) == [("done", "y")]


def test_close_runs_what_is_queued_then_stops():
    model = FakeModel(blocked=True)
    sched = scheduler(model)
    occupy(sched, model)
    ticket = sched.submit(Request(), ["queued"])
    sched.close()
    model.gate.set()
    assert Request().wait(ticket, "fake") == [("done", "queued")]
    sched.join(10)
    assert not sched.alive


def executor_threads(sched):
    return [t for t in threading.enumerate() if t.name.startswith(f"mindserve:{sched.name}#")]


def test_executor_threads_start_only_when_an_instance_is_queued():
    """A queue only ever run inline (a lone caller's; a worker process's models) starts no
    thread; the first instance queued starts them."""
    model = FakeModel(blocked=True)
    drained = threading.Event()
    sched = Scheduler("lazy", model, max_batch_size=8, on_drained=drained.set)
    model.gate.set()
    assert run(sched, ["alone"]) == [("done", "alone")]
    assert executor_threads(sched) == [] and not sched.alive
    model.gate.clear()
    model.entered.clear()
    holder = occupy(sched, model)
    ticket = sched.submit(Request(), ["queued"])
    assert len(executor_threads(sched)) == 1 and sched.alive
    model.gate.set()
    holder.join(10)
    assert Request().wait(ticket, "fake") == [("done", "queued")]
    sched.close()
    sched.join(10)
    assert drained.is_set() and not sched.alive


def test_closing_a_queue_that_never_queued_still_calls_on_drained_after_inline_runs():
    model = FakeModel(blocked=True)
    drained = threading.Event()
    sched = scheduler(model, on_drained=drained.set)
    holder = occupy(sched, model)  # inline, in the caller's thread
    sched.close()
    assert not drained.wait(0.05), "on_drained waits for the batch running inline"
    model.gate.set()
    holder.join(10)
    assert drained.wait(10)
    sched.join(10)
    assert not sched.alive


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=24),
    max_batch=st.integers(min_value=1, max_value=9),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_every_request_is_answered_once_with_its_own_results(sizes, max_batch, seed):
    """Many threads, random request sizes: each gets exactly its own results, no batch too big."""
    rng = random.Random(seed)
    model = FakeModel()
    sched = scheduler(model, max_batch_size=max_batch)

    def call(k, n):
        return run(sched, [(k, i) for i in range(n)], keys=[rng.choice("ab") for _ in range(n)])

    answers, errors = call_in_threads(call, sizes)
    sched.close()
    assert not errors
    assert answers == {k: [("done", (k, i)) for i in range(n)] for k, n in enumerate(sizes)}
    seen = [v for batch in model.batches for v in batch]
    assert sorted(seen) == sorted((k, i) for k, n in enumerate(sizes) for i in range(n))
    assert all(1 <= len(b) <= max_batch for b in model.batches)
    assert model.overlaps == 0


class SlotModel(FakeModel):
    """Counts how many batches are inside at once (several are allowed here)."""

    def __init__(self):
        super().__init__()
        self.most_inside = 0

    def __call__(self, values, requests=None):
        with self._guard:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        threading.Event().wait(0.0005)  # let other slots overlap
        self.batches.append(list(values))
        with self._guard:
            self.inside -= 1
        return [("done", v) for v in values]


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=24),
    max_batch=st.integers(min_value=1, max_value=9),
    capacity=st.integers(min_value=1, max_value=4),
    inline=st.booleans(),
)
def test_with_n_slots_every_request_is_answered_once_and_at_most_n_batches_run(
    sizes, max_batch, capacity, inline
):
    model = SlotModel()
    sched = scheduler(model, max_batch_size=max_batch, capacity=capacity)

    def call(k, n):
        request = Request()
        return request.wait(sched.submit(request, [(k, i) for i in range(n)], inline=inline), "fake")

    answers, errors = call_in_threads(call, sizes)
    sched.close()
    sched.join(10)
    assert not errors and not sched.alive
    assert answers == {k: [("done", (k, i)) for i in range(n)] for k, n in enumerate(sizes)}
    seen = [v for batch in model.batches for v in batch]
    assert sorted(seen) == sorted((k, i) for k, n in enumerate(sizes) for i in range(n))
    assert all(1 <= len(b) <= max_batch for b in model.batches)
    assert model.most_inside <= capacity


def test_two_slots_run_two_batches_at_once():
    gate = threading.Event()
    inside = threading.Semaphore(0)

    def model(values, requests):
        inside.release()
        gate.wait(10)
        return [("done", v) for v in values]

    sched = scheduler(model, capacity=2, max_batch_size=1)
    first, second = sched.submit(Request(), ["a"], inline=False), sched.submit(Request(), ["b"], inline=False)
    assert inside.acquire(timeout=10) and inside.acquire(timeout=10), "both batches entered together"
    gate.set()
    assert Request().wait(first, "fake") == [("done", "a")]
    assert Request().wait(second, "fake") == [("done", "b")]
    sched.close()


def test_after_a_batch_of_several_calls_the_executor_waits_for_as_many_to_come_back():
    """Callers of the last batch return together: the next batch waits (refill_wait) for them."""
    model = FakeModel(blocked=True)
    sched = scheduler(model, refill_wait=30.0)
    occupy(sched, model, "first")
    tickets = [sched.submit(Request(), [k], inline=False) for k in range(4)]
    model.gate.set()  # the executor now runs the 4 queued calls as one batch
    for ticket in tickets:
        Request().wait(ticket, "fake")
    assert model.batches[-1] == [0, 1, 2, 3]
    model.gate.clear()
    model.entered.clear()
    again = [sched.submit(Request(), [k], inline=True) for k in range(10, 12)]  # two come back...
    wait_until(lambda: sched.queued == 0 and sched.running == 1)  # ...and the executor waits
    assert not model.entered.is_set(), "nothing runs while the batch refills"
    again += [sched.submit(Request(), [k]) for k in (12, 13)]  # the other two arrive
    assert model.entered.wait(10)
    model.gate.set()
    for ticket in again:
        Request().wait(ticket, "fake")
    assert model.batches[-1] == [10, 11, 12, 13]
    sched.close()


def test_a_lone_caller_never_waits_for_a_refill():
    model = FakeModel()
    sched = scheduler(model, refill_wait=30.0)
    for k in range(3):
        assert run(sched, [k]) == [("done", k)]
    assert model.threads == [threading.current_thread()] * 3, "each call ran inline at once"
    sched.close()


def test_waiting_for_a_batch_to_fill_never_blocks_callers_of_another_kind():
    """While the executor waits (max_delay) for instances of one kind, instances of another
    kind still queue: the wait releases the queue's lock."""
    model = FakeModel()
    sched = scheduler(model, max_batch_size=4, max_delay=0.5)
    first = sched.submit(Request(), ["a"], keys=["x"])
    wait_until(lambda: sched.queued == 0)  # the executor took it and waits for more "x"
    others = sched.submit(Request(), ["y1", "y2", "y3"], keys=["y"] * 3)  # enough to wake it, none fit
    started = threading.Event()
    other = threading.Thread(target=lambda: (sched.submit(Request(), ["b"], keys=["y"]), started.set()))
    other.start()
    assert started.wait(0.25), "a caller of another kind could not queue while the batch filled"
    assert Request().wait(first, "fake") == [("done", "a")]
    assert Request().wait(others, "fake") == [("done", "y1"), ("done", "y2"), ("done", "y3")]
    other.join(10)
    sched.close()

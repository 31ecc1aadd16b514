"""The one helper that runs a failed batch again one instance at a time (_batching/alone.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from mindserve._batching.alone import isolating
from mindserve._calls import Request
from mindserve._define.stage import Stage
from mindserve._errors import ModelError, StageError
from mindserve._outcomes import Abandoned, Failure, Outcome
from mindserve._serving.stages import run_stage


class Recorder:
    """Runs batches of ints: fails a batch holding a negative number; records each run."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[int], tuple[Request, ...]]] = []

    def __call__(self, batch: list[int], requests: Sequence[Request]) -> list[Outcome] | Failure:
        self.runs.append((list(batch), tuple(requests)))
        if any(n < 0 for n in batch):
            return Failure(ModelError, f"negative in {batch}")
        return [(n * 2,) for n in batch]


def test_results_that_did_not_fail_are_returned_as_they_are():
    run = Recorder()
    results: list[Outcome] = [(2,), (4,)]
    assert isolating(run, [1, 2], (), results) is results
    assert run.runs == []


def test_a_batch_of_one_keeps_its_failure():
    failure = Failure(ModelError, "boom")
    assert isolating(Recorder(), [1], (), failure) == [failure]


def test_a_failed_batch_runs_again_one_instance_at_a_time():
    run = Recorder()
    batch = [1, -1, 3]
    outcomes = isolating(run, batch, (), run(batch, ()))
    assert outcomes[0] == (2,) and outcomes[2] == (6,)
    assert isinstance(outcomes[1], Failure) and outcomes[1].detail == "negative in [-1]"
    assert run.runs[1:] == [([1], ()), ([-1], ()), ([3], ())]


def test_each_instance_runs_alone_with_its_own_request():
    run = Recorder()
    first, second = Request(), Request()
    isolating(run, [1, -1], [first, second], Failure(ModelError, "batch"))
    assert run.runs == [([1], (first,)), ([-1], (second,))]


def test_instances_of_calls_that_gave_up_are_dropped_not_run_again():
    run = Recorder()
    gone, expired, alive = Request(), Request(0), Request()
    gone.abandoned = Abandoned.CANCELLED
    outcomes = isolating(run, [1, 2, 3], [gone, expired, alive], Failure(ModelError, "batch"))
    assert run.runs == [([3], (alive,))]
    assert outcomes[2] == (6,)
    for outcome, why in zip(outcomes[:2], ("cancelled", "deadline")):
        assert isinstance(outcome, Failure) and outcome.dropped
        assert outcome.detail == f"dropped before running: the call was {why}"


def test_failed_alone_gives_the_outcome_of_an_instance_that_failed_alone():
    batch_failure = Failure(ModelError, "batch")
    seen: list[tuple[str, str]] = []

    def failed_alone(alone: Failure, whole: Failure) -> Failure:
        seen.append((alone.detail, whole.detail))
        return Failure(ModelError, "pinned")

    outcomes = isolating(Recorder(), [-1, 2], (), batch_failure, failed_alone)
    assert seen == [("negative in [-1]", "batch")]
    assert isinstance(outcomes[0], Failure) and outcomes[0].detail == "pinned"
    assert outcomes[1] == (4,)


def _batched(function, batch_size=4):
    return Stage(function, outputs=1, batch_size=batch_size, name="double")


def test_a_batched_stage_drops_the_instances_of_calls_that_gave_up():
    calls: list[list[int]] = []

    def double(xs):
        calls.append(list(xs))
        if len(xs) > 1:
            raise ValueError("whole batch")
        return [x * 2 for x in xs]

    stage = _batched(double)
    gone, alive = Request(), Request()
    gone.abandoned = Abandoned.DEADLINE
    outcomes = run_stage(stage, [(1,), (2,)], [gone, alive])
    assert calls == [[1, 2], [2]]
    assert isinstance(outcomes[0], Failure) and outcomes[0].dropped
    assert outcomes[1] == (4,)


def test_a_batched_stage_still_pins_and_warns(caplog):
    def double(xs):
        if len(xs) > 1:
            raise ValueError("whole batch")
        if xs[0] < 0:
            raise ValueError("negative")
        return [x * 2 for x in xs]

    outcomes = run_stage(_batched(double), [(1,), (-1,)])
    assert outcomes[0] == (2,)
    failure = outcomes[1]
    assert isinstance(failure, Failure) and failure.error is StageError
    assert "(its batch of 2 failed first: stage 'double' raised" in failure.detail
    with caplog.at_level(logging.WARNING, logger="mindserve"):
        assert run_stage(_batched(double), [(1,), (2,)]) == [(2,), (4,)]
    assert "failed on a batch of 2" in caplog.text and "on none of its instances run alone" in caplog.text


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_batched_stage_chunks_requests_with_its_instances(batch_size):
    seen: list[list[int]] = []

    def double(xs):
        seen.append(list(xs))
        raise ValueError("always")

    gone = Request()
    gone.abandoned = Abandoned.CANCELLED
    outcomes = run_stage(
        _batched(double, batch_size), [(1,), (2,), (3,), (4,)], [Request(), Request(), gone, Request()]
    )
    assert len(outcomes) == 4
    assert all(isinstance(o, Failure) for o in outcomes)
    if batch_size == 2:
        assert outcomes[2].dropped and [3] not in seen

"""A batch that failed as a whole runs again one instance at a time.

One helper for the models' queues, the batched stages run in this process and the batched
stages run in worker processes: only the instances that fail alone fail, and an instance
whose call gave up meanwhile is dropped, not run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar, Union

from mindserve._calls import Request, dropped
from mindserve._outcomes import Failure, Outcome

T = TypeVar("T")

#: Runs instances for their requests (``()``: not known): one outcome each, or the batch's failure.
RunBatch = Callable[[list[T], Sequence[Request]], Union[list[Outcome], Failure]]


def isolating(
    run: RunBatch[T],
    batch: list[T],
    requests: Sequence[Request],
    results: list[Outcome] | Failure,
    failed_alone: Callable[[Failure, Failure], Failure] | None = None,
) -> list[Outcome]:
    """The outcomes of ``batch``, given ``results``, what ``run`` gave for the whole batch.

    If the batch failed as a whole, each instance runs again alone, except the instances
    whose call (``requests``, one per instance, when known) gave up meanwhile: those are
    dropped. ``failed_alone(alone, batch)`` gives the outcome of an instance whose run alone
    failed as a whole, from that failure and the batch's (by default, its own failure).
    """
    if not isinstance(results, Failure):
        return results
    if len(batch) < 2:
        return [results]
    outcomes: list[Outcome] = []
    now = time.monotonic()
    for index, one in enumerate(batch):
        request = requests[index] if requests else None
        if request is not None and request.expired(now):
            outcomes.append(dropped(request))
            continue
        alone = run([one], () if request is None else (request,))
        if not isinstance(alone, Failure):
            outcomes.append(alone[0])
        elif failed_alone is None:
            outcomes.append(alone)
        else:
            outcomes.append(failed_alone(alone, results))
    return outcomes

"""Running a traced method over the instances of one request.

The steps run in order, each over every instance still alive, in the calling thread.
A model step or a batched stage hands the request's instances to its scheduler, where
they join other callers' instances in batches, and waits for them. An instance that
fails at any step drops out with its failure; the others carry on.
"""

from __future__ import annotations

import asyncio
import operator
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any

from mindserve._calls import ALARM, Pending, Request
from mindserve._define.method import Method
from mindserve._define.stage import Stage
from mindserve._errors import InstanceError
from mindserve._outcomes import Abandoned, Failure, Outcome
from mindserve._serving.running import LoadedServable
from mindserve._tickets import mailbox_of
from mindserve._values import read_arrays, read_instance

Steps = Generator[Pending, "list[Outcome]", "list[dict[str, Any] | InstanceError]"]
#: How a call ends: ``done(results, None)`` or ``done(None, error)``.
Done = Callable[[list[dict[str, Any] | InstanceError] | None, BaseException | None], None]


def method_steps(
    loaded: LoadedServable, method: Method, instances: Sequence[Any], request: Request, inline: bool
) -> Steps:
    """Run ``method`` over ``instances``, yielding each step that must wait on a scheduler.

    The driver sends back the step's outcomes. Each instance ends with its output dict or
    its own error.
    """
    if method.direct:
        arguments = read_arrays(instances, method.inputs)
        if arguments is not None:  # the common call: no per-instance bookkeeping
            return (yield from _direct_steps(loaded, method, arguments, request, inline))
    read = [read_instance(inst, method) for inst in instances]
    failures: list[Failure | None] = [failure for _, failure in read]
    # Each live instance's values as a row indexed by ref: inputs first, then step outputs.
    pad = [None] * (len(method.labels) - len(method.inputs))
    rows: list[list[Any]] = [[] if values is None else values + pad for values, _ in read]
    for step in method.steps:
        live = [i for i, failure in enumerate(failures) if failure is None]
        if not live:
            break
        args = _gather([rows[i] for i in live], step.args)
        if isinstance(step.callee, Stage):
            started = loaded.submit_stage(step.callee, args, request)
        else:
            labels = method.arg_labels(step)
            started = loaded.submit_model(step.callee, args, labels, request, inline)
        outcomes = (yield started) if isinstance(started, Pending) else started
        failed = False
        outputs = step.outputs
        single = outputs[0] if len(outputs) == 1 else None
        for i, outcome in zip(live, outcomes):
            if isinstance(outcome, Failure):
                failures[i] = outcome
                rows[i] = []
                failed = True
            elif single is not None:
                rows[i][single] = outcome[0]
            else:
                row = rows[i]
                for ref, value in zip(outputs, outcome):
                    row[ref] = value
        if failed:  # a stage's Model.call may have failed because the call timed out or was cancelled
            request.check(f"step '{step.callee.name}'")
    output_names = method.outputs
    picked = _gather(rows, method.output_refs)
    results: list[dict[str, Any] | InstanceError] = []
    for index, failure in enumerate(failures):
        if failure is not None:
            results.append(
                failure.to_exception(
                    servable=loaded.name, version=loaded.version, method=method.name, index=index
                )
            )
        else:
            results.append(dict(zip(output_names, picked[index])))
    return results


def _direct_steps(
    loaded: LoadedServable, method: Method, arguments: list[tuple[Any, ...]], request: Request, inline: bool
) -> Steps:
    """A direct method (one model call from the inputs to the outputs) over instances that
    are all dicts of numpy arrays: the same outcomes as the general path, with no rows."""
    outcomes = yield _submit_direct(loaded, method, arguments, request, inline)
    return _direct_results(loaded, method, outcomes, request)


def _submit_direct(
    loaded: LoadedServable, method: Method, arguments: list[tuple[Any, ...]], request: Request, inline: bool
) -> Pending:
    (step,) = method.steps
    return loaded.submit_model(step.callee, arguments, method.labels[: len(method.inputs)], request, inline)


def _direct_results(
    loaded: LoadedServable, method: Method, outcomes: list[Outcome], request: Request
) -> list[dict[str, Any] | InstanceError]:
    names = method.outputs
    if len(names) == 1:
        (name,) = names
        results: list[Any] = [
            outcome if isinstance(outcome, Failure) else {name: outcome[0]} for outcome in outcomes
        ]
    else:
        results = [
            outcome if isinstance(outcome, Failure) else dict(zip(names, outcome)) for outcome in outcomes
        ]
    failed = [index for index, result in enumerate(results) if type(result) is not dict]
    if failed:
        request.check(f"step '{method.steps[0].callee.name}'")
        for index in failed:
            results[index] = results[index].to_exception(
                servable=loaded.name, version=loaded.version, method=method.name, index=index
            )
    return results


def _gather(rows: list[list[Any]], refs: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """The values at ``refs`` of each row (an empty row, a failed instance, gives ``()``)."""
    if not refs:
        return [()] * len(rows)
    if len(refs) == 1:
        (ref,) = refs
        return [(row[ref],) if row else () for row in rows]
    get = operator.itemgetter(*refs)
    return [get(row) if row else () for row in rows]


def run_method(
    loaded: LoadedServable, method: Method, instances: Sequence[Any], request: Request
) -> list[dict[str, Any] | InstanceError]:
    """Run a method in this thread; a model idle when reached runs here at once."""
    if method.direct:  # the common call, with no generator to drive
        arguments = read_arrays(instances, method.inputs)
        if arguments is not None:
            outcomes = request.finish(_submit_direct(loaded, method, arguments, request, True))
            return _direct_results(loaded, method, outcomes, request)
    steps = method_steps(loaded, method, instances, request, inline=True)
    try:
        pending = next(steps)
        while True:
            pending = steps.send(request.finish(pending))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_method_async(
    loaded: LoadedServable,
    method: Method,
    instances: Sequence[Any],
    request: Request,
    submit: Callable[[Callable[[], None]], None],
) -> list[dict[str, Any] | InstanceError]:
    """Run a method on the running event loop, never blocking it on user code, a model or a
    batched stage.

    A method with per-instance stages runs as :func:`run_method_callback` does (its
    stretches on the pool behind ``submit``), the loop only awaiting its end; any other
    method's stretches only check and queue instances or build results, and run on the
    loop, which awaits each step.
    """
    if method.per_instance_code:
        return await _run_off_loop(loaded, method, instances, request, submit)
    steps = method_steps(loaded, method, instances, request, inline=False)
    try:
        pending = next(steps)
        while True:
            pending = steps.send(await request.finish_async(pending))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _run_off_loop(
    loaded: LoadedServable,
    method: Method,
    instances: Sequence[Any],
    request: Request,
    submit: Callable[[Callable[[], None]], None],
) -> list[dict[str, Any] | InstanceError]:
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    mailbox = mailbox_of(loop)
    end: list[tuple[list[dict[str, Any] | InstanceError] | None, BaseException | None]] = []

    def done(results: list[dict[str, Any] | InstanceError] | None, error: BaseException | None) -> None:
        end.append((results, error))
        mailbox.post(ended)

    run_method_callback(loaded, method, instances, request, submit, done)
    try:
        await ended  # the call's deadline ends it from the alarm thread
    except asyncio.CancelledError:
        request.abandon(Abandoned.CANCELLED)
        raise
    ((results, error),) = end
    if error is not None:
        raise error
    assert results is not None
    return results


def run_method_callback(
    loaded: LoadedServable,
    method: Method,
    instances: Sequence[Any],
    request: Request,
    submit: Callable[[Callable[[], None]], None],
    done: Done,
) -> None:
    """Run a method holding no thread while it waits; ``done(results, error)`` ends it.

    A step's wait is only a callback on its ticket, so a pending call costs a few objects.
    The stretches of work between two waits run where they cost least while staying safe:

    * with a per-instance stage in the method, each runs through ``submit`` (a bounded
      pool), so user code never runs in a scheduler's thread;
    * without one, a stretch only checks and queues instances or builds results: the
      first runs in the calling thread, the later ones in the scheduler's thread that
      completed the step, right after its batch (no hand-off, and no Python thread
      competing with the model while it runs). ``done`` must then hand any user code it
      triggers (a future's done-callbacks) to a pool itself.
    """
    if method.direct:
        arguments = read_arrays(instances, method.inputs)
        if arguments is not None:  # the common call: one step, no generator or driver
            _run_direct_callback(loaded, method, arguments, request, done)
            return
    steps = method_steps(loaded, method, instances, request, inline=False)
    user_code = method.per_instance_code
    driver = _CallbackDriver(steps, request, submit, done, here=not user_code)
    ALARM.watch(request)
    if user_code:
        submit(driver.start)
    else:
        driver.start()


def _run_direct_callback(
    loaded: LoadedServable, method: Method, arguments: list[tuple[Any, ...]], request: Request, done: Done
) -> None:
    """:func:`run_method_callback` for a direct method over dicts of arrays: the instances
    are queued here, and their step's ticket ends the call in the thread that releases it."""
    try:
        started = _submit_direct(loaded, method, arguments, request, inline=False)
    except BaseException as exc:
        done(None, exc)
        return
    ALARM.watch(request)
    request.watch(started.ticket)
    started.ticket.on_done(_DirectEnd(loaded, method, request, started, done))


class _DirectEnd:
    """Ends a direct call when its step's ticket is released: a small object the ticket
    holds until then (a closure would cost a cell per variable)."""

    __slots__ = ("done", "loaded", "method", "pending", "request")

    def __init__(
        self, loaded: LoadedServable, method: Method, request: Request, pending: Pending, done: Done
    ) -> None:
        self.loaded = loaded
        self.method = method
        self.request = request
        self.pending = pending
        self.done = done

    def __call__(self) -> None:
        try:  # raises if the deadline passed, or the call was cancelled or closed
            outcomes = self.request.collect(self.pending)
            results = _direct_results(self.loaded, self.method, outcomes, self.request)
        except BaseException as exc:
            self.done(None, exc)
            return
        self.done(results, None)


class _CallbackDriver:
    """Drives one call's steps from ticket callbacks (see :func:`run_method_callback`)."""

    __slots__ = ("_ended", "done", "here", "pending", "request", "steps", "submit")

    def __init__(
        self,
        steps: Steps,
        request: Request,
        submit: Callable[[Callable[[], None]], None],
        done: Done,
        here: bool,
    ) -> None:
        self.steps = steps
        self.request = request
        self.submit = submit
        self.done = done
        self.here = here
        self.pending: Pending | None = None
        self._ended = threading.Lock()
        if not here:  # its per-instance stages run on the pool, where no ticket waits
            request.on_abandon = self._abandoned

    def start(self) -> None:
        self._advance(None)

    def _end(self, results: list[dict[str, Any] | InstanceError] | None, error: BaseException | None) -> None:
        """Call ``done`` once: the steps ending and the call being given up may race."""
        if self._ended.acquire(blocking=False):
            # Let go of what refers back to this driver: its call's objects are then freed
            # by reference counting, with no cycle left for the garbage collector.
            self.request.on_abandon = None
            self.pending = None
            self.done(results, error)

    def _abandoned(self) -> None:
        """The call's deadline passed, or close() gave up on it, maybe while one of its
        per-instance stages runs: end it now; whatever that stage returns is discarded."""
        try:
            self.request.check("a per-instance stage")
        except BaseException as exc:
            self._end(None, exc)

    def _advance(self, outcomes: list[Outcome] | None) -> None:
        try:
            pending = self.steps.send(outcomes)  # type: ignore[arg-type]
        except StopIteration as stop:
            self._end(stop.value, None)
            return
        except BaseException as exc:
            self._end(None, exc)
            return
        self.pending = pending
        self.request.watch(pending.ticket)
        pending.ticket.on_done(self._woken)

    def _woken(self) -> None:
        """The step's ticket was released (in a scheduler's thread): continue here when that
        runs no user code, else on the pool."""
        if self.here:
            self._resume()
        else:
            self.submit(self._resume)

    def _resume(self) -> None:
        assert self.pending is not None
        try:
            outcomes = self.request.collect(self.pending)
        except BaseException as exc:
            self.steps.close()
            self._end(None, exc)
            return
        self._advance(outcomes)

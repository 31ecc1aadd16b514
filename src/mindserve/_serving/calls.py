"""A runtime's calls, from lookup to their end: counted in the metrics and reported to
observers.

* :class:`CallBook` is where a runtime counts how each call ended (metrics and
  :class:`~mindserve.CallReport`).
* :class:`Call` is one call of a method on a running version; it ends exactly once, with
  its results (raising :class:`~mindserve.InferenceError` if an instance failed, unless
  asked to return the errors) or with an error told where it happened.
* :class:`CallFuture` is what ``infer_async`` returns.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable

import numpy as np

from mindserve._batching.handoff import hand_off
from mindserve._calls import CancelledCall, Request, in_executor_thread
from mindserve._define.method import Method
from mindserve._define.servable import Servable
from mindserve._errors import (
    ArgumentTypeError,
    CallError,
    InferenceError,
    InstanceError,
    InvalidInputError,
    MethodNotFoundError,
)
from mindserve._observe.metrics import MetricsCollector
from mindserve._observe.observer import CallReport, ObserverHub, Outcome, outcome_of
from mindserve._outcomes import Abandoned
from mindserve._serving.dispatch import Dispatcher
from mindserve._serving.hosting import find_slot, servable_name
from mindserve._serving.running import LoadedServable
from mindserve._serving.slot import ServableSlot
from mindserve._serving.versions import check_version_number


class CallBook:
    """A runtime's calls in and out: where each call finds its version and method (and is
    counted in flight by that version, see ``LoadedServable.enter``), and where its end is
    counted and reported. It holds the runtime's parts, never the runtime."""

    def __init__(
        self,
        hosted: dict[str, ServableSlot],
        lock: threading.RLock,
        metrics: MetricsCollector | None,
        observer: ObserverHub,
    ) -> None:
        self.hosted = hosted
        self.lock = lock
        self.metrics = metrics
        self.observer = observer

    def begin(
        self,
        check_open: Callable[[], None],
        servable: str | Servable,
        method: str,
        instances: Any,
        version: int,
        timeout: float | None,
        return_exceptions: bool,
    ) -> Call:
        """Find the servable version and method, and count the call as running on it."""
        request = Request(timeout)
        check_open()
        name = servable_name(servable)
        if type(version) is not int or version < 0:
            check_version_number(version)
        if type(method) is not str and not isinstance(method, str):
            raise ArgumentTypeError(f"a method is named by a str; got {type(method).__name__}")
        while True:  # no lock: a version retired meanwhile turns the call away (enter)
            loaded = find_slot(self.hosted, self.lock, name).pick(version)
            found = loaded.definition.methods.get(method)
            if found is None:
                raise MethodNotFoundError(
                    f"servable '{loaded.name}' has no method {method!r}; its methods: "
                    f"{sorted(loaded.definition.methods)}"
                )
            if type(instances) is not list and (
                isinstance(instances, (str, bytes, dict, np.ndarray)) or not isinstance(instances, Sequence)
            ):
                raise InvalidInputError(
                    f"instances must be a list of dicts; got {type(instances).__name__}. "
                    f"Hint: wrap a single instance in a list: [instance]",
                    servable=loaded.name,
                    version=loaded.version,
                    method=method,
                )
            if loaded.enter(request):
                break
            check_open()  # the version was retired meanwhile: look again
        return Call(self, loaded, found, request, len(instances), return_exceptions)

    def ended(
        self,
        call: Call,
        error: BaseException | None,
        results: list[Any] | None,
        errors: list[InstanceError] | None = None,
    ) -> None:
        """A call is over: let its version shut down if retired (and close() go on), count
        it, report it."""
        call.loaded.leave(call.request)
        metrics = self.metrics
        report = self.observer.wants("on_call")
        if metrics is None and not report:
            return
        seconds = time.monotonic() - call.request.started
        outcome, outcomes, failed = _outcomes(call.count, error, results, errors)
        if metrics is not None:  # counted directly: no record is built for the metrics
            metrics.method_stats(call.loaded.name, call.loaded.version, call.method.name).count(
                outcome, outcomes, seconds
            )
        if report:
            self.observer.on_call(
                CallReport(
                    servable=call.loaded.name,
                    version=call.loaded.version,
                    method=call.method.name,
                    instances=call.count,
                    failed=failed,
                    seconds=seconds,
                    error=None if error is None else type(error).__name__,
                    outcome=outcome,
                    outcomes=outcomes,
                    call=call.request.id,
                )
            )


class Call:
    """One call of a method, from lookup to its end (which happens exactly once)."""

    __slots__ = ("book", "count", "loaded", "method", "request", "return_exceptions")

    def __init__(
        self,
        book: CallBook,
        loaded: LoadedServable,
        method: Method,
        request: Request,
        count: int,
        return_exceptions: bool,
    ) -> None:
        self.book = book
        self.loaded = loaded
        self.method = method
        self.request = request
        self.count = count
        self.return_exceptions = return_exceptions

    def end(self, error: BaseException | None) -> None:
        """End the call with an error, raising nothing."""
        self.book.ended(self, error, None)

    def finish(self, results: list[Any] | None, error: BaseException | None) -> list[Any]:
        """End the call; return its results, or raise its error (located) or InferenceError."""
        if error is not None:
            self.end(error)
            raise located(error, self.loaded, self.method)
        assert results is not None
        errors = [r for r in results if isinstance(r, InstanceError)]
        self.book.ended(self, None, results, errors)
        if errors and not self.return_exceptions:
            raise InferenceError(results)
        return results


class CallFuture(Future):  # type: ignore[type-arg]
    """The future ``infer_async`` returns, and the end of its call (:meth:`complete`).

    Cancelling it drops the call's queued instances, and its done-callbacks never run in a
    scheduler's thread (completed there, it hands them to the runtime's pool), so a
    callback may block or even call the runtime."""

    def __init__(self, call: Call, dispatcher: Dispatcher) -> None:
        super().__init__()
        self._call = call
        self._dispatcher = dispatcher

    def complete(self, results: list[Any] | None, error: BaseException | None) -> None:
        """End the call with its results or error, and complete this future with them."""
        if isinstance(error, CancelledCall):  # nobody waits for the result
            self._call.end(error)
            return
        try:
            settle(self, result=self._call.finish(results, error))
        except BaseException as exc:  # the call's error, InferenceError included
            settle(self, exception=exc)

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            self._call.request.abandon(Abandoned.CANCELLED)
        return cancelled

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        super().add_done_callback(_OffExecutor(fn, self._dispatcher))


class _OffExecutor:
    """A done-callback that, called in a scheduler's thread, runs on the pool instead (a
    small object rather than a closure: one per callback)."""

    __slots__ = ("dispatcher", "fn")

    def __init__(self, fn: Callable[[Future[Any]], object], dispatcher: Dispatcher) -> None:
        self.fn = fn
        self.dispatcher = dispatcher

    def __call__(self, future: Future[Any]) -> None:
        if in_executor_thread():
            later = functools.partial(_run_callback, self.fn, future)
            if not hand_off(self.dispatcher.submit, later):
                self.dispatcher.submit(later)
        else:
            self.fn(future)


def _run_callback(fn: Callable[[Future[Any]], object], future: Future[Any]) -> None:
    """A done-callback run on the pool, failing as ``concurrent.futures`` reports a failed
    callback."""
    try:
        fn(future)
    except Exception:
        logging.getLogger("concurrent.futures").exception("exception calling callback for %r", future)


def settle(future: Future[Any], *, result: Any = None, exception: BaseException | None = None) -> None:
    """Complete a future unless its caller cancelled it meanwhile."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def located(exc: BaseException, loaded: LoadedServable, method: Method) -> BaseException:
    """The same error object, told where it happened: a whole-call error gets ``servable``,
    ``version`` and ``method`` attributes and its message prefixed with them."""
    if isinstance(exc, CallError) and exc.servable is None:
        exc.servable, exc.version, exc.method = loaded.name, loaded.version, method.name
        where = f"servable '{loaded.name}' version {loaded.version}, method '{method.name}'"
        exc.args = (f"{where}: {exc}", *exc.args[1:])
    return exc


def _outcomes(
    count: int,
    error: BaseException | None,
    results: list[Any] | None,
    errors: list[InstanceError] | None = None,
) -> tuple[Outcome, tuple[tuple[Outcome, int], ...], int]:
    """How a call of ``count`` instances ended, how each instance did, and how many failed
    (``errors``: the results' instance errors, if already picked out)."""
    if error is not None or results is None:
        outcome = outcome_of(error)
        return outcome, ((outcome, count),) if count else (), count if error is not None else 0
    if errors is None:
        errors = [r for r in results if isinstance(r, InstanceError)]
    if not errors:
        return Outcome.OK, ((Outcome.OK, count),) if count else (), 0
    counts: dict[Outcome, int] = {}
    for exc in errors:
        kind = outcome_of(exc)
        counts[kind] = counts.get(kind, 0) + 1
    if count > len(errors):
        counts[Outcome.OK] = count - len(errors)
    return outcome_of(errors[0]), tuple(counts.items()), len(errors)

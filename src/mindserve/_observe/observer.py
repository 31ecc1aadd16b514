"""What a runtime reports while it serves: one typed interface, and the records it receives.

An :class:`Observer` is told about version events, model loads and warm-ups, every batch
a scheduler runs (why it formed, how long it waited and ran, how much padding), every
instance dropped or refused, and every call. Subclass it and override the methods you
need; metrics exporters and telemetry hang on it::

    class BatchSizes(mindserve.Observer):
        def on_batch(self, batch):
            print(batch.where, batch.size, batch.reason)

    rt = mindserve.Runtime(observers=[BatchSizes()])

Methods are called in the thread where the thing happened (often a scheduler's thread),
so they must be quick. An exception an observer raises is logged and ignored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import enum
import logging
from collections.abc import Iterable
from types import MethodType
from typing import Any

import attrs

from mindserve._calls import CancelledCall
from mindserve._errors import (
    ArgumentTypeError,
    DeadlineExceededError,
    InvalidArgumentError,
    InvalidInputError,
    ModelError,
    OverloadedError,
    RuntimeClosedError,
    StageError,
)

logger = logging.getLogger("mindserve")


class EventKind(str, enum.Enum):
    """What happened to a version (a ``str``, so ``event.kind == "loaded"`` works)."""

    LOADED = "loaded"  # loaded and warmed up, not yet serving
    SWAPPED = "swapped"  # now the default version: new calls go to it
    UNLOADED = "unloaded"  # stopped, its last call finished
    FAILED = "failed"  # failed to load; whatever was serving goes on


@attrs.frozen
class VersionEvent:
    """Something happened to a version of a servable (see :class:`EventKind`).

    ``error`` says why, for ``"failed"``.
    """

    kind: EventKind
    servable: str
    version: int | None
    at: datetime.datetime
    error: BaseException | None = None


@attrs.frozen
class Step:
    """A queue that batches instances across callers: a version's model, or a batched stage.

    ``kind`` is ``"model"`` or ``"stage"``; ``name`` the model's or stage's name.
    """

    servable: str
    version: int
    kind: str
    name: str

    def __str__(self) -> str:
        return f"servable '{self.servable}' version {self.version}: {self.kind} '{self.name}'"


class Outcome(str, enum.Enum):
    """How an instance, or a call, ended (a ``str``: ``outcome == "ok"`` works)."""

    OK = "ok"
    INVALID_INPUT = "invalid_input"  # InvalidInputError
    STAGE_ERROR = "stage_error"  # StageError
    MODEL_ERROR = "model_error"  # ModelError (WorkerError included)
    TIMED_OUT = "timed_out"  # DeadlineExceededError
    CANCELLED = "cancelled"  # the caller cancelled the future or the task
    OVERLOADED = "overloaded"  # OverloadedError: a full queue refused it
    CLOSED = "closed"  # RuntimeClosedError
    ERROR = "error"  # any other error


_OUTCOMES = (
    (InvalidInputError, Outcome.INVALID_INPUT),
    (StageError, Outcome.STAGE_ERROR),
    (ModelError, Outcome.MODEL_ERROR),
    (DeadlineExceededError, Outcome.TIMED_OUT),
    (OverloadedError, Outcome.OVERLOADED),
    (RuntimeClosedError, Outcome.CLOSED),
    (asyncio.CancelledError, Outcome.CANCELLED),
    (concurrent.futures.CancelledError, Outcome.CANCELLED),
    (CancelledCall, Outcome.CANCELLED),  # the caller cancelled its future
)


def outcome_of(error: BaseException | None) -> Outcome:
    """How an instance or a call that ended with ``error`` (``None``: none) ended."""
    if error is None:
        return Outcome.OK
    for kind, outcome in _OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return Outcome.ERROR


class BatchReason(str, enum.Enum):
    """Why a scheduler ran a batch when it did."""

    INLINE = "inline"  # the model was idle and nothing queued: the caller ran its own batch at once
    FULL = "full"  # the queue held a full batch
    QUEUE_EMPTY = "queue_empty"  # it took everything queued (no max_delay to wait for more)
    DELAY = "delay"  # max_delay passed before the batch filled
    REFILLED = "refilled"  # as many instances as the last batch held queued again (Batching.refill_wait)
    REFILL = "refill"  # refill_wait passed first: fewer callers came back than the last batch held
    CLOSING = "closing"  # the scheduler is closing: what is queued runs now


@attrs.frozen
class BatchReport:
    """One batch run by a model's or a batched stage's scheduler.

    ``where`` names the servable, version and step. ``size`` instances ran, padded up to
    ``padded_to`` (equal to ``size`` when nothing was padded). ``queue_wait``: seconds the
    oldest instance waited in the queue; ``run_seconds``: the batch's run; ``queued``:
    instances still waiting once the batch formed; ``failed``: instances that failed;
    ``step``: the same place as ``where``, as fields; ``at``: when it ended (``time.time()``);
    ``calls``: the calls whose instances it ran (their ``CallReport.call``; filled for
    observers, empty in :meth:`Runtime.batch_log`). For a model with variable-length inputs
    (:class:`~mindserve.Padding`): ``elements``, the elements of its padded inputs the
    instances hold, and ``padded_elements``, the same instances' elements once padded to
    the batch's length bucket (``None`` for other models). Rows added to reach a batch
    bucket are not in them: ``padded_to - size`` counts those. A batch never mixes length
    buckets: instances of one bucket share a batch key.
    """

    where: str
    size: int
    padded_to: int
    reason: BatchReason
    queue_wait: float
    run_seconds: float
    queued: int
    failed: int
    step: Step | None = None
    at: float = 0.0
    calls: tuple[int, ...] = ()
    elements: int | None = None
    padded_elements: int | None = None


class DropReason(str, enum.Enum):
    """Why instances never ran."""

    CANCELLED = "cancelled"  # the caller cancelled its call
    DEADLINE = "deadline"  # the call's timeout passed while they were queued
    CLOSED = "closed"  # the runtime closed before they ran
    OVERLOADED = "overloaded"  # refused: the queue was full


@attrs.frozen
class DropReport:
    """Instances dropped from a queue, or refused by it, without running."""

    where: str
    count: int
    reason: DropReason
    step: Step | None = None


@attrs.frozen
class WarmUpReport:
    """A model loaded and warmed up: ``compiled`` maps each batch size run at load to its
    seconds (empty when warm-up was off); ``seconds`` is the whole load."""

    servable: str
    version: int
    model: str
    compiled: tuple[tuple[int, float], ...]
    seconds: float


@attrs.frozen
class CallReport:
    """One call of a method: ``instances`` in, ``failed`` of them failed; ``error`` names the
    whole-call error class when the call raised one (``"DeadlineExceededError"``, ...);
    ``outcome`` is how the call ended (``"ok"`` when every instance succeeded; else the
    whole-call error's kind, or the first failed instance's); ``outcomes`` counts its
    instances by how each ended; ``call`` numbers it (unique in the process), as the
    ``calls`` of the batches that carried it do."""

    servable: str
    version: int
    method: str
    instances: int
    failed: int
    seconds: float
    error: str | None = None
    outcome: Outcome = Outcome.OK
    outcomes: tuple[tuple[Outcome, int], ...] = ()
    call: int = 0


class Observer:
    """Receives what a runtime does. Every method is a no-op here: override what you need."""

    def on_version(self, event: VersionEvent) -> None:
        """A version loaded, became the default, unloaded, or failed to load."""

    def on_warm_up(self, report: WarmUpReport) -> None:
        """A model loaded and warmed up."""

    def on_batch(self, report: BatchReport) -> None:
        """A scheduler ran a batch."""

    def on_drop(self, report: DropReport) -> None:
        """Instances were dropped or refused without running."""

    def on_call(self, report: CallReport) -> None:
        """A method call finished (with results, instance errors, or a whole-call error)."""


_METHODS = ("on_version", "on_warm_up", "on_batch", "on_drop", "on_call")


class ObserverHub(Observer):
    """Forwards each report to every observer that overrides its method; isolates failures.

    ``wants(name)`` tells whether anyone listens, so that callers skip building records
    nobody reads.
    """

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        #: The runtime's metrics collector (see ``_observe/metrics.py``), counted directly by
        #: schedulers and the runtime, without building records; ``None`` when off.
        self.metrics: Any = None
        self._observers: list[Observer] = []
        self._listening: dict[str, tuple[MethodType, ...]] = {name: () for name in _METHODS}
        if isinstance(observers, (Observer, str, bytes)) or not isinstance(observers, Iterable):
            raise ArgumentTypeError(
                f"observers must be a list of mindserve.Observer; got {type(observers).__name__}. "
                f"Hint: observers=[my_observer]"
            )
        for observer in observers:
            self.add(observer)

    def add(self, observer: Observer) -> None:
        if not isinstance(observer, Observer):
            raise ArgumentTypeError(
                f"an observer must be a mindserve.Observer; got {type(observer).__name__}"
            )
        self._observers.append(observer)
        self._refresh()

    def remove(self, observer: Observer) -> None:
        if observer not in self._observers:
            raise InvalidArgumentError(f"{observer!r} is not an observer of this runtime")
        self._observers.remove(observer)
        self._refresh()

    def _refresh(self) -> None:
        # Bound methods, looked up once: sending a record is a loop of plain calls.
        self._listening = {
            name: tuple(
                getattr(o, name)
                for o in self._observers
                if getattr(type(o), name) is not getattr(Observer, name)
            )
            for name in _METHODS
        }

    def step_stats(self, step: Step) -> Any:
        """Where a scheduler counts its batches for the metrics, or ``None`` without them."""
        return None if self.metrics is None else self.metrics.step_stats(step)

    def wants(self, name: str) -> bool:
        return bool(self._listening[name])

    def _send(self, name: str, record: object) -> None:
        for method in self._listening[name]:
            try:
                method(record)
            except BaseException:  # SystemExit included: an observer never stops serving
                logger.exception("mindserve observer %r raised on %r", method.__self__, record)

    def on_version(self, event: VersionEvent) -> None:
        if event.kind is EventKind.FAILED:
            which = "" if event.version is None else f" version {event.version}"  # None: the newest
            logger.error("servable '%s'%s failed to load: %s", event.servable, which, event.error)
        elif event.kind is EventKind.SWAPPED:  # on a first start, nothing was swapped: say what holds
            logger.info("servable '%s' version %s is now the default", event.servable, event.version)
        else:
            logger.info("servable '%s' version %s %s", event.servable, event.version, event.kind.value)
        self._send("on_version", event)

    def on_warm_up(self, report: WarmUpReport) -> None:
        self._send("on_warm_up", report)

    def on_batch(self, report: BatchReport) -> None:
        self._send("on_batch", report)

    def on_drop(self, report: DropReport) -> None:
        self._send("on_drop", report)

    def on_call(self, report: CallReport) -> None:
        self._send("on_call", report)

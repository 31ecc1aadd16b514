"""What the main process and a worker process say to each other, as types.

The main process starts a worker and sends it a :class:`Boot` (a plain pickle over the
command pipe: the worker knows nothing else yet). The worker answers :class:`Ready` once
it has loaded the version, or :class:`Raised` if it could not. Then the main process sends
one command at a time, :class:`RunModel` or :class:`RunStage`, each answered by
:class:`Done` or :class:`Raised`, until :class:`Stop`. Every reply carries the worker's
log records since the last reply, and the seconds the command took there.

Commands and replies travel through a :class:`~mindserve._workers.transfer.Channel`
(:func:`prepare`, :func:`send`, :func:`decode`): their arrays go out of band, through
shared memory, wherever they sit in the message.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any, Union

import attrs

from mindserve._workers import transfer


class WorkerState(enum.Enum):
    """Where one worker of a pool stands (:attr:`WorkerInfo.state` is its value)."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    #: Given up: it failed to start too many times in a row; it is not restarted again.
    FAILED = "failed"
    STOPPED = "stopped"


# -- main process -> worker -------------------------------------------------------------


@attrs.frozen
class Boot:
    """The first message to a new worker: all it needs to load the version."""

    #: The main process's ``sys.path``: modules the definition uses by name import there too.
    sys_path: list[str]
    #: The main process's pid: the worker exits when its parent changes.
    parent: int
    #: The start of the names of the worker's shared-memory segments.
    prefix: str
    #: The servable definition, cloudpickled.
    definition: bytes
    version: int
    #: ``(device target or None, device id)``.
    device: tuple[str | None, int]
    warm_up: bool
    log_level: int
    #: The CPUs to pin the worker to (``None``: wherever the OS puts it).
    cpus: tuple[int, ...] | None


@attrs.frozen
class RunModel:
    """Run a model of the version over one batch of arrays."""

    model: str
    arrays: tuple[Any, ...]


@attrs.frozen
class RunStage:
    """Run a batched stage over instances (``timeout``: seconds left to the calls, if any)."""

    stage: str
    instances: list[tuple[Any, ...]]
    timeout: float | None


@attrs.frozen
class Stop:
    """Exit (after removing the worker's shared memory)."""


Command = Union[RunModel, RunStage, Stop]


# -- worker -> main process -------------------------------------------------------------


@attrs.frozen
class ModelReady:
    """What a worker reports about one model it loaded: its plan, which the model's queue in
    the main process runs with as it is (planned once, where the model runs), and its
    warm-up report."""

    #: The worker's :class:`~mindserve._execution.plan.ModelPlan`: its input specs, the
    #: padding probe's verdict (and words, :attr:`~ModelPlan.probed`), what the warm-up
    #: compiled and the buckets it kept.
    plan: Any
    #: The worker's :class:`~mindserve._observe.observer.WarmUpReport`, if it warmed up.
    report: Any
    #: The input shapes its load ran (one graph each) for a MindSpore model; ``None``
    #: for a callable.
    shapes: Any = None


@attrs.frozen
class Ready:
    """The worker loaded the version and waits for commands."""

    models: Mapping[str, ModelReady]
    #: ``"CPU:0"``, or ``None`` when no model uses MindSpore.
    device: str | None
    pid: int
    logs: list[logging.LogRecord] = attrs.field(factory=list)


@attrs.frozen
class Done:
    """A command's result: a model's output arrays, or a stage's outcomes."""

    result: Any
    logs: list[logging.LogRecord] = attrs.field(factory=list)
    seconds: float = 0.0


@attrs.frozen
class Raised:
    """A command (or loading the version) raised ``error`` (a portable error: see
    :mod:`mindserve._crossing`)."""

    error: BaseException
    logs: list[logging.LogRecord] = attrs.field(factory=list)
    seconds: float = 0.0


Reply = Union[Ready, Done, Raised]


# -- over a channel ---------------------------------------------------------------------


def prepare(message: Command | Reply, *, lend: bool = False) -> transfer.Message:
    """Pickle a message once, to write to any channel (see :func:`transfer.prepare`)."""
    return transfer.prepare(type(message).__name__, message, lend=lend)


def send(channel: transfer.Channel, message: Command | Reply) -> None:
    """Send a message on ``channel``."""
    channel.write(prepare(message))


def decode(channel: transfer.Channel, raw: bytes, *, copy: bool | None = None) -> Any:
    """The message read from ``channel`` (see :meth:`transfer.Channel.decode`)."""
    _, message = channel.decode(raw, copy=copy)
    return message


def receive(channel: transfer.Channel, *, copy: bool | None = None) -> Any:
    """Wait for the next message on ``channel``, and decode it."""
    return decode(channel, channel.read(), copy=copy)

"""A worker process: hosts one servable version's models and batched stages on its device
(:mod:`mindserve._workers.hosted`) and runs what it is sent.

Started by :mod:`mindserve._workers.pool` as ``python -m mindserve._workers R W``, a
fresh interpreter (never a fork: MindSpore is not fork-safe once initialised), with the
read end of its command pipe and the write end of its reply pipe. The first message
carries the main process's ``sys.path`` and the servable definition (cloudpickled, so
that definitions made in ``__main__``, a notebook cell or a test function arrive too).

It runs one command at a time and exits, removing its shared-memory segments, when the
main process says stop, when its command pipe closes, or when its parent changes (the
main process died while a command ran).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import attrs

from mindserve._crossing import portable_error
from mindserve._workers import protocol
from mindserve._workers.protocol import Boot, Done, Raised, Ready, RunModel, RunStage, Stop
from mindserve._workers.transfer import Channel

if TYPE_CHECKING:
    from mindserve._execution.executor import Executor
    from mindserve._workers.hosted import HostedVersion

#: How often a worker checks that its main process is still there, in seconds.
PARENT_POLL = 0.2


class _Collect(logging.Handler):
    """Keeps the worker's log records, to travel to the main process with the next reply."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args, record.exc_info = record.getMessage(), None, None
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        records, self.records = self.records, []
        return records


class Worker:
    """The version the worker hosts (its executors and batched stages: no queue, no serving
    version) and the loop serving the main process's commands."""

    def __init__(self, commands: Channel, replies: Channel, boot: Boot, logs: _Collect) -> None:
        self.commands = commands
        self.replies = replies
        self.boot = boot
        self.logs = logs
        self.hosted: HostedVersion | None = None
        #: Each model's executor, by name (a model's batch runs on it, nothing in between).
        self.executors: dict[str, Executor] = {}

    def load(self) -> Ready:
        import cloudpickle

        from mindserve._workers.hosted import host

        boot = self.boot
        self.hosted = host(cloudpickle.loads(boot.definition), boot.version, boot.device, boot.warm_up)
        self.executors = self.hosted.executors
        return self.hosted.ready(os.getpid())

    def close(self) -> None:
        """Release the executors (the main process said stop, or closed the pipe)."""
        if self.hosted is not None:
            self.hosted.close()

    def serve(self) -> None:
        while True:
            try:
                raw = self.commands.read()
            except (EOFError, OSError):
                return  # the main process closed the pipe (or died)
            started = time.perf_counter()
            command = None
            try:
                command = protocol.decode(self.commands, raw)  # views of the segment, if lent
                if isinstance(command, Stop):
                    return
                result, failed = self._execute(command), False
            except BaseException as exc:  # nothing a model or stage raises ends the worker
                result, failed = portable_error(exc), True
            command = None  # views of the command's segment: gone before the next command
            self._reply(result, failed, time.perf_counter() - started)

    def _execute(self, command: Any) -> Any:
        if isinstance(command, RunModel):
            return self.executors[command.model].run(command.arrays)
        if isinstance(command, RunStage):
            assert self.hosted is not None
            outcomes = self.hosted.run_stage(command.stage, command.instances, command.timeout)
            return [_portable_failure(o) for o in outcomes]
        raise RuntimeError(f"unknown command {command!r}")

    def _reply(self, value: Any, failed: bool, seconds: float) -> None:
        """Send a command's result (``failed``: ``value`` is the error it raised).

        A result that cannot travel fails its command, never the worker: one with no room
        in shared memory (or no segment to be had) with that :class:`WorkerError`, a model's
        or a stage's alike; one that cannot be pickled fails the instances that cannot (a
        stage's outcomes) or the command (a model's)."""
        from mindserve._errors import WorkerError

        logs = self.logs.take()
        try:
            try:
                protocol.send(
                    self.replies, Raised(value, logs, seconds) if failed else Done(value, logs, seconds)
                )
                return
            except WorkerError:
                raise
            except Exception as exc:  # a result that cannot be pickled
                problem = f"{type(exc).__name__}: {exc}"
            if not failed and isinstance(value, list):  # a stage's outcomes: fail only the bad ones
                protocol.send(self.replies, Done([_sendable(o) for o in value], logs, seconds))
                return
            error: BaseException = RuntimeError(f"the worker cannot send its result back: {problem}")
        except WorkerError as exc:  # no room in shared memory: nothing of the result can travel
            error = portable_error(exc)
        protocol.send(self.replies, Raised(error, logs, seconds))


def _portable_failure(outcome: Any) -> Any:
    """A stage outcome whose failure's cause can cross to the main process."""
    from mindserve._outcomes import Failure

    if isinstance(outcome, Failure) and outcome.cause is not None:
        return Failure(outcome.error, outcome.detail, portable_error(outcome.cause))
    return outcome


def _sendable(outcome: Any) -> Any:
    """The outcome, or its instance's failure when it cannot be pickled."""
    from mindserve._errors import StageError
    from mindserve._outcomes import Failure
    from mindserve._workers.transfer import dumps

    try:
        dumps(outcome)
    except Exception as exc:
        return Failure(
            StageError,
            f"the stage's result cannot be sent from the worker process: {type(exc).__name__}: {exc}",
        )
    return outcome


def _watch_parent(parent: int, on_gone: Any) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    on_gone()


def main(argv: list[str]) -> None:
    # The main process decides when a worker ends: Ctrl-C in a terminal reaches the whole
    # process group, and must not kill the workers under the main process's feet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from mindserve._calls import mark_service_thread

    read_fd, write_fd = int(argv[1]), int(argv[2])
    commands_pipe = Connection(read_fd, writable=False)
    replies_pipe = Connection(write_fd, readable=False)
    boot: Boot = pickle.loads(commands_pipe.recv_bytes())
    sys.path[:] = boot.sys_path
    if boot.cpus and hasattr(os, "sched_setaffinity"):
        # Before MindSpore starts its threads: they inherit it. Unpinned, MindSpore's CPU
        # kernels run several times slower whenever another process is runnable.
        os.sched_setaffinity(0, boot.cpus)
    commands = Channel(commands_pipe, boot.prefix + "in")
    replies = Channel(replies_pipe, boot.prefix + "out")

    def gone() -> None:  # the main process died: leave nothing behind
        commands.drop()
        replies.drop()
        os._exit(0)

    threading.Thread(target=_watch_parent, args=(boot.parent, gone), daemon=True).start()
    logs = _Collect()
    logger = logging.getLogger("mindserve")
    logger.addHandler(logs)
    logger.setLevel(boot.log_level)
    logger.propagate = False
    mark_service_thread()
    worker = Worker(commands, replies, boot, logs)
    try:
        ready = worker.load()
    except BaseException as exc:
        protocol.send(replies, Raised(portable_error(exc), logs.take()))
        replies.drop()
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # again: importing MindSpore installs its own
    protocol.send(replies, attrs.evolve(ready, logs=logs.take()))
    worker.serve()
    try:
        worker.close()
    except BaseException:  # pragma: no cover - nobody is left to tell; the process ends anyway
        pass
    commands.drop()
    replies.drop()
    # No interpreter teardown: MindSpore's can take seconds, and nothing is left to flush.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

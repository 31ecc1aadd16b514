"""One worker process as the pool sees it: its place in the pool (the process there now,
its channels and counters), starting its interpreter, and telling how it ended."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from mindserve._observe.status import WorkerInfo
from mindserve._workers.protocol import WorkerState
from mindserve._workers.transfer import Channel


class WorkerPlace:
    """One worker's place in the pool: the process there now and its counters."""

    def __init__(self, index: int, device_id: int) -> None:
        self.index = index
        self.device_id = device_id
        self.state = WorkerState.STARTING
        self.process: subprocess.Popen[bytes] | None = None
        self.commands: Channel | None = None
        self.replies: Channel | None = None
        self.prefix = ""
        self.busy = False
        self.restarts = 0
        self.batches = 0
        self.transfer_seconds = 0.0
        self.run_seconds = 0.0
        self.crashes = 0  # deaths in a row without a batch run in between
        self.last_error: str | None = None
        #: The error the last start failed with, if the worker could say.
        self.error: BaseException | None = None
        #: The CPUs the worker runs on (``None``: wherever the OS puts it).
        self.cpus: tuple[int, ...] | None = None
        #: Whether a process was started here before (its output file is then added to).
        self.started_before = False

    def info(self) -> WorkerInfo:
        process = self.process
        alive = process is not None and process.returncode is None
        return WorkerInfo(
            index=self.index,
            pid=process.pid if alive else None,  # type: ignore[union-attr]
            device_id=self.device_id,
            state=self.state.value,
            busy=self.busy,
            restarts=self.restarts,
            batches=self.batches,
            run_seconds=self.run_seconds,
            transfer_seconds=self.transfer_seconds,
            last_error=self.last_error,
        )


class Died(Exception):
    """The worker running a command died (its pipe closed); ``sent``: after the command
    reached it."""

    def __init__(self, *, sent: bool) -> None:
        super().__init__()
        self.sent = sent


def start_interpreter(
    output: str | None = None, append: bool = False
) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start ``python -m mindserve._workers`` (a fresh interpreter, never a fork: MindSpore
    is not fork-safe) with two new pipes; return the process, the write end of its command
    pipe and the read end of its reply pipe. Raises what stopped it (no interpreter there,
    no file descriptors or memory left, an ``output`` file it may not write), leaving no
    descriptor open. ``output``: the file its standard output and error go to (made anew,
    or added to with ``append``), else this process's."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, environment.get("PYTHONPATH", "")) if p
    )
    fds: list[int] = []
    try:
        command_read, command_write = os.pipe()
        fds += (command_read, command_write)
        reply_read, reply_write = os.pipe()
        fds += (reply_read, reply_write)
        with contextlib.ExitStack() as files:
            log = None if output is None else files.enter_context(open(output, "ab" if append else "wb"))
            process = subprocess.Popen(
                [sys.executable, "-m", "mindserve._workers", str(command_read), str(reply_write)],
                pass_fds=(command_read, reply_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=None if log is None else subprocess.STDOUT,
                env=environment,
            )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    os.close(command_read)
    os.close(reply_write)
    return process, command_write, reply_read


def wait_quietly(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait up to ``seconds`` for ``process`` to exit; whether it did."""
    try:
        process.wait(max(seconds, 0.0))
    except subprocess.TimeoutExpired:
        return False
    return True


def exit_reason(process: subprocess.Popen[bytes], wait: float = 5.0) -> str:
    """How a worker ended: ``"was killed by SIGKILL"``, ``"exited with code 3"``."""
    wait_quietly(process, wait)
    code = process.returncode
    if code is None:
        return "stopped answering (its pipe closed)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"

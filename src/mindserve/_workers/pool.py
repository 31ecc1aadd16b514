"""Worker processes for one servable version, driven from the main process.

The main process keeps every scheduler: it forms the batches and hands each to an idle
worker (the one that has run the fewest batches first). A worker runs one command at a
time: a model over a batch of arrays, or a batched stage over instances. Array data goes
through shared memory (:mod:`~mindserve._workers.transfer`); the pipe carries only small
messages.

A worker that dies is seen at once (its reply pipe closes, and a thread waits on each
process): the batch it was running goes to another worker, or to the same one once it
has restarted. A batch is sent again only while it has killed fewer than
:data:`DEATHS_PER_BATCH` workers; then it fails, and the model's queue runs its instances
one at a time, so that a poison instance fails alone. A worker restarts with a growing
delay; one that fails :data:`~mindserve._workers.supervisor.START_ATTEMPTS` starts in a row
is given up (:mod:`~mindserve._workers.supervisor` keeps the processes), and when every
worker is given up calls fail at once with a :class:`WorkerError`.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from mindserve._calls import Request
from mindserve._crossing import restore_traceback
from mindserve._errors import WorkerError
from mindserve._outcomes import Failure
from mindserve._workers import protocol
from mindserve._workers.process import Died, WorkerPlace, exit_reason
from mindserve._workers.protocol import Done, Raised, RunModel, RunStage, WorkerState
from mindserve._workers.supervisor import WorkerProcesses
from mindserve._workers.transfer import Message

logger = logging.getLogger("mindserve")

#: A batch is failed once it has killed this many workers (it is not sent again).
DEATHS_PER_BATCH = 2
#: A worker still running a batch this long after every call in it gave up is killed.
HUNG_AFTER = 10.0
_HUNG_POLL = 0.5
#: How often a batch waiting for a worker checks whether its calls gave up.
_WAIT_POLL = 0.1


class WorkerPool(WorkerProcesses):
    """The worker processes of one servable version, sent batches: each command goes to
    an idle worker, again after a death, and a hung worker is killed; shared by the
    version's queues (:meth:`retain`, :meth:`release`)."""

    # -- running ---------------------------------------------------------------------

    def call(
        self, command: RunModel | RunStage, requests: Sequence[Request] = (), *, lend: bool = False
    ) -> Any:
        """Run one command for ``requests`` on an idle worker; return its result (raise its error).

        ``command`` is pickled once, here: what cannot be pickled raises before any worker is
        involved. A worker that dies under the command is replaced: the command goes to
        another worker, until it has killed :data:`DEATHS_PER_BATCH` of them. A worker
        still running a command :data:`HUNG_AFTER` seconds after every one of ``requests``
        gave up is killed (and restarted). ``lend``: see :func:`prepare`."""
        message = protocol.prepare(command, lend=lend)
        deaths: list[str] = []
        while True:
            slot, process = self._acquire(requests)
            try:
                reply = self._run_on(slot, process, message, requests)
            except Died as died:
                self._lost(slot, process)
                if not died.sent:  # it died before the command reached it: not this batch's doing
                    continue
                deaths.append(f"worker {slot.index} (pid {process.pid}) {exit_reason(process, wait=0.5)}")
                if len(deaths) >= DEATHS_PER_BATCH:
                    raise WorkerError(
                        f"the worker processes running this batch died {len(deaths)} times "
                        f"({'; '.join(deaths)}); it is not sent again"
                    ) from None
                continue
            except BaseException:
                self._release(slot)
                raise
            self._release(slot)
            if isinstance(reply, Raised):
                raise restore_traceback(reply.error)
            if isinstance(command, RunStage):
                for outcome in reply.result:
                    if isinstance(outcome, Failure) and outcome.cause is not None:
                        restore_traceback(outcome.cause)
            return reply.result

    def _run_on(
        self,
        slot: WorkerPlace,
        process: subprocess.Popen[bytes],
        message: Message,
        requests: Sequence[Request],
    ) -> Done | Raised:
        commands, replies = slot.commands, slot.replies
        if commands is None or replies is None:
            raise Died(sent=False)
        started = time.perf_counter()
        try:
            commands.write(message)
        except WorkerError:  # no room in shared memory: the worker is fine
            raise
        except (OSError, ValueError, AttributeError, TypeError, BufferError):  # a pipe or segment gone
            raise Died(sent=False) from None
        try:
            while not replies.connection.poll(_HUNG_POLL):
                if _given_up_long_ago(requests):
                    process.kill()
                    self._lost(slot, process)
                    raise WorkerError(
                        f"worker {slot.index} (pid {process.pid}) was still running a batch "
                        f"{HUNG_AFTER:.0f} s after every call in it gave up; it was stopped and restarts"
                    )
            raw = replies.read()
        except WorkerError:
            raise
        except (EOFError, OSError, ValueError, AttributeError, TypeError):
            raise Died(sent=True) from None
        reply: Done | Raised = protocol.decode(replies, raw, copy=True)
        slot.transfer_seconds += time.perf_counter() - started - reply.seconds
        slot.run_seconds += reply.seconds
        slot.batches += 1
        slot.crashes = 0
        if reply.logs:
            self._emit_logs(slot, reply.logs)
        return reply

    def _acquire(self, requests: Sequence[Request] = ()) -> tuple[WorkerPlace, subprocess.Popen[bytes]]:
        """Take an idle worker (the one that ran fewest batches); wait while workers start
        or restart; raise :class:`WorkerError` when none is left, or when every one of
        ``requests`` gave up meanwhile."""
        with self._cond:
            while True:
                if self._closing.is_set():
                    raise WorkerError(f"{self.where}: the worker processes are stopped")
                idle = [s for s in self._slots if s.state is WorkerState.READY and not s.busy]
                if idle:
                    slot = min(idle, key=lambda s: s.batches)
                    slot.busy = True
                    return slot, slot.process  # type: ignore[return-value]
                if all(s.state is WorkerState.FAILED for s in self._slots):
                    reasons = "; ".join(f"worker {s.index}: {s.last_error}" for s in self._slots)
                    raise WorkerError(f"{self.where}: no worker process is left ({reasons})")
                if requests:
                    now = time.monotonic()
                    if all(r.expired(now) for r in requests):
                        raise WorkerError(
                            f"{self.where}: every call of this batch gave up while it waited for a worker"
                        )
                    self._cond.wait(_WAIT_POLL)
                else:
                    self._cond.wait()

    def _release(self, slot: WorkerPlace) -> None:
        with self._cond:
            slot.busy = False
            self._cond.notify()

    def _lost(self, slot: WorkerPlace, process: subprocess.Popen[bytes]) -> None:
        """The worker died under a command (its pipe broke): it takes no more until
        restarted. One still alive is killed, so that its keeper restarts it: a worker
        marked restarting is never left running with nobody to restart it."""
        with self._cond:
            slot.busy = False
            if slot.process is process and slot.state is WorkerState.READY:
                slot.state = WorkerState.RESTARTING
                if process.poll() is None:
                    process.kill()


def _given_up_long_ago(requests: Sequence[Request]) -> bool:
    """Whether every request gave up (deadline, cancelled, closed) at least
    :data:`HUNG_AFTER` seconds ago."""
    if not requests:
        return False
    now = time.monotonic()
    latest = 0.0
    for request in requests:
        if not request.expired(now):
            return False
        gave_up = [t for t in (request.deadline, request.abandoned_at) if t is not None]
        latest = max(latest, min(gave_up))
    return now - latest >= HUNG_AFTER

"""The worker processes of one pool, kept alive: start, ready, restart, give up, stop.

:class:`WorkerProcesses` starts a fresh interpreter for each worker, sends it the version
(:class:`~mindserve._workers.protocol.Boot`) and waits for it to load; a thread per worker
waits for it to exit and restarts it with a growing delay, until a worker fails
:data:`START_ATTEMPTS` starts in a row and is given up. Closing asks every worker to stop,
then kills what is left and removes its shared memory; the last of its users (a version's
queues) closes it, and so does the program's exit when nobody did. Sending batches to the
workers is :class:`~mindserve._workers.pool.WorkerPool`'s job, over this.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import pickle
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any

from mindserve._config import WorkerPlan
from mindserve._errors import LoadError, MindServeError
from mindserve._observe.status import WorkerInfo
from mindserve._observe.visible import warn_event
from mindserve._workers import protocol
from mindserve._workers.pinning import worker_cpus
from mindserve._workers.process import WorkerPlace, exit_reason, start_interpreter, wait_quietly
from mindserve._workers.protocol import Boot, Ready, Stop, WorkerState
from mindserve._workers.transfer import (
    Channel,
    cloudpickle_dumps,
    owner_prefix,
    sweep,
    sweep_orphans,
    unpredictable,
)

logger = logging.getLogger("mindserve")

#: A worker that fails this many starts in a row is not restarted again.
START_ATTEMPTS = 3
#: Restart delays: the first, and the longest (it doubles with each crash in a row).
FIRST_DELAY = 0.1
LONGEST_DELAY = 5.0
#: Seconds a stopping worker gets to exit before it is killed.
STOP_GRACE = 3.0

_pool_ids = itertools.count(1)
_pools: weakref.WeakSet[WorkerProcesses] = weakref.WeakSet()


class WorkerProcesses:
    """The worker processes of one servable version: started, kept alive, stopped."""

    def __init__(
        self,
        definition: Any,
        version: int,
        plan: WorkerPlan,
        device_target: str | None,
        where: str,
        warm_up: bool,
    ) -> None:
        self.where = where
        self.plan = plan
        self.size = plan.size
        self.prefix = f"{owner_prefix()}{unpredictable()}-{next(_pool_ids)}-"
        self._owner = os.getpid()  # a child forked from this process does not own the workers
        self._version = version
        self._name = definition.name
        self._device_target = device_target
        self._warm_up = warm_up
        try:
            self._definition = cloudpickle_dumps(definition)
        except Exception as exc:
            cells = [m.name for m in definition.models.values() if not m.origin.shippable]
            hint = (
                f"if it is the nn.Cell of model {cells}, export it with mindspore.export and serve the "
                f"MindIR file; else open files, locks and sessions inside the stage or model "
                f"function instead of capturing them"
                if cells
                else "open files, locks and sessions inside the stage or model function instead of "
                "capturing them"
            )
            raise LoadError(
                f"{where}: the servable cannot be sent to worker processes: {type(exc).__name__}: {exc}. "
                f"Hint: workers get the definition through cloudpickle, so every model source and "
                f"stage must pickle: {hint}."
            ) from exc
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._closed = threading.Event()
        self._slots = [WorkerPlace(i, d) for i, d in enumerate(plan.device_ids)]
        for slot, cpus in zip(self._slots, worker_cpus(device_target, self.size)):
            slot.cpus = cpus
        self._generation = itertools.count()
        self._keepers: list[threading.Thread] = []
        #: What the first worker reported when it became ready: each model's specs, buckets...
        self.ready: Ready | None = None
        self._users = 1
        _pools.add(self)

    def __repr__(self) -> str:
        states = [s.state.value for s in self._slots]
        return f"<{type(self).__name__} {self.where} {states}>"

    # -- starting --------------------------------------------------------------------

    def start(self) -> list[Ready]:
        """Start every worker and wait until each has loaded (and warmed up) the version;
        return what each reported, in the workers' order.

        Raises :class:`LoadError` (and leaves nothing running) if any fails."""
        sweep_orphans()
        started = time.monotonic()
        readies: list[Ready] = []
        try:
            logger.info(
                "%s: starting %d worker process%s (each loads and warms up)",
                self.where,
                len(self._slots),
                "" if len(self._slots) == 1 else "es",
            )
            for slot in self._slots:
                if not self._spawn(slot):
                    raise self._start_error(slot)
            for position, slot in enumerate(self._slots, start=1):
                ready = self._await_ready(slot)
                if ready is None:
                    raise self._start_error(slot)
                logger.info(
                    "%s: worker %d ready after %.1f s (%d of %d)",
                    self.where,
                    slot.index,
                    time.monotonic() - started,
                    position,
                    len(self._slots),
                )
                readies.append(ready)
                if self.ready is None:
                    self.ready = ready
        except BaseException:
            self.close()
            raise
        for slot in self._slots:
            keeper = threading.Thread(
                target=self._keep,
                args=(slot,),
                name=f"mindserve:{self.where}: worker {slot.index}",
                daemon=True,
            )
            self._keepers.append(keeper)
            keeper.start()
        return readies

    def _spawn(self, slot: WorkerPlace) -> bool:
        """Start a fresh interpreter for ``slot`` and send it the definition; False (and
        ``slot.last_error`` set) when no process could be started, or the pool is closing."""
        try:
            output = self.plan.output_file(self._name, self._version, slot.index, slot.device_id)
            process, command_write, reply_read = start_interpreter(output, append=slot.started_before)
            slot.started_before = True
        except Exception as exc:  # no interpreter there, no file descriptors or memory left
            slot.error = None
            slot.last_error = f"could not be started: {type(exc).__name__}: {exc}"
            return False
        commands = Connection(command_write, readable=False)
        with self._cond:
            if self._closing.is_set():  # close() began while this one started: it must not stay
                process.kill()
                process.wait()
                commands.close()
                os.close(reply_read)
                slot.last_error = "the pool closed while it started"
                return False
            slot.prefix = f"{self.prefix}{slot.index}-{next(self._generation)}-"
            slot.commands = Channel(commands, slot.prefix + "in")
            slot.replies = Channel(Connection(reply_read, writable=False), slot.prefix + "out")
            slot.process = process
            slot.state = WorkerState.STARTING
        boot = Boot(
            sys_path=list(sys.path),
            parent=os.getpid(),
            prefix=slot.prefix,
            definition=self._definition,
            version=self._version,
            device=(self._device_target, slot.device_id),
            warm_up=self._warm_up,
            log_level=logger.getEffectiveLevel(),
            cpus=slot.cpus,
        )
        try:
            commands.send_bytes(pickle.dumps(boot, protocol=5))
        except OSError:
            pass  # it died at once: _await_ready reports how
        return True

    def _await_ready(self, slot: WorkerPlace) -> Ready | None:
        """Wait for the worker's first message; ``None`` (and ``slot.last_error`` set) if it
        failed to load or died first."""
        process = slot.process
        assert process is not None and slot.replies is not None
        try:
            reply = protocol.receive(slot.replies, copy=True)
        except (EOFError, OSError):
            slot.last_error = f"{exit_reason(process)} while loading"
            self._discard(slot)
            return None
        self._emit_logs(slot, reply.logs)
        if isinstance(reply, Ready):
            with self._cond:
                slot.state = WorkerState.READY
                self._cond.notify_all()
            return reply
        error = reply.error
        slot.last_error = f"failed to load: {type(error).__name__}: {error}"
        slot.error = error
        wait_quietly(process, STOP_GRACE)
        self._discard(slot)
        return None

    def _start_error(self, slot: WorkerPlace) -> LoadError:
        error = slot.error
        where = f"worker {slot.index} (device id {slot.device_id})"
        if isinstance(error, MindServeError):
            message = f"{error} (in {where})"
        elif error is not None:
            message = (
                f"{self.where}: {where} cannot load the servable: {type(error).__name__}: {error}. "
                f"Hint: the definition reaches workers through cloudpickle; modules it uses by "
                f"name must be importable there (workers get this process's sys.path)."
            )
        else:
            message = f"{self.where}: {where} {slot.last_error}"
        exc = LoadError(message)
        exc.__cause__ = error
        return exc

    # -- keeping workers alive -----------------------------------------------------

    def _keep(self, slot: WorkerPlace) -> None:
        """Wait for the worker to exit; restart it (with a growing delay) unless closing.

        Whatever goes wrong here gives the worker up (calls then fail fast or go to the
        other workers): a slot must never stay "restarting" with nobody restarting it."""
        try:
            self._keep_alive(slot)
        except BaseException as exc:
            with self._cond:
                if slot.state not in (WorkerState.STOPPED, WorkerState.FAILED):
                    slot.state = WorkerState.FAILED
                    slot.last_error = f"given up: restarting it failed: {type(exc).__name__}: {exc}"
                self._cond.notify_all()
            logger.exception("%s: worker %d: restarting it failed", self.where, slot.index)

    def _keep_alive(self, slot: WorkerPlace) -> None:
        while True:
            process = slot.process
            if process is None:
                return
            process.wait()
            reason = exit_reason(process)
            with self._cond:
                if self._closing.is_set():
                    slot.state = WorkerState.STOPPED
                    self._cond.notify_all()
                    return
                slot.state = WorkerState.RESTARTING
                slot.crashes += 1
                slot.last_error = reason
                self._cond.notify_all()
            warn_event(
                logger,
                logging.WARNING,
                "%s: worker %d (pid %d) %s; restarting it",
                self.where,
                slot.index,
                process.pid,
                reason,
            )
            self._discard(slot)
            if not self._restart(slot):
                return

    def _restart(self, slot: WorkerPlace) -> bool:
        """Start a new worker in ``slot``; False when given up (or closing)."""
        delay = min(FIRST_DELAY * 2 ** (slot.crashes - 1), LONGEST_DELAY)
        for attempt in range(1, START_ATTEMPTS + 1):
            logger.info(
                "%s: worker %d: restarting in %.1f s (attempt %d of %d)",
                self.where,
                slot.index,
                delay,
                attempt,
                START_ATTEMPTS,
            )
            if self._closing.wait(delay):
                self._set_state(slot, WorkerState.STOPPED)
                return False
            started = time.monotonic()
            if self._spawn(slot) and self._await_ready(slot) is not None:
                with self._cond:
                    slot.restarts += 1
                    self._cond.notify_all()
                logger.info(
                    "%s: worker %d restarted: loaded and ready in %.1f s",
                    self.where,
                    slot.index,
                    time.monotonic() - started,
                )
                return True
            delay = min(delay * 2, LONGEST_DELAY)
            warn_event(
                logger,
                logging.WARNING,
                "%s: worker %d failed to restart (attempt %d of %d): %s",
                self.where,
                slot.index,
                attempt,
                START_ATTEMPTS,
                slot.last_error,
            )
        with self._cond:
            slot.state = WorkerState.FAILED
            slot.last_error = (
                f"given up after {START_ATTEMPTS} failed starts in a row; the last: {slot.last_error}"
            )
            self._cond.notify_all()
        warn_event(logger, logging.ERROR, "%s: worker %d %s", self.where, slot.index, slot.last_error)
        return False

    def _set_state(self, slot: WorkerPlace, state: WorkerState) -> None:
        with self._cond:
            slot.state = state
            self._cond.notify_all()

    def _discard(self, slot: WorkerPlace) -> None:
        """Release what a dead worker leaves: its pipes and shared memory."""
        for channel in (slot.commands, slot.replies):
            if channel is not None:
                channel.drop()
                channel.connection.close()
        slot.commands = slot.replies = None
        sweep(slot.prefix)

    def _emit_logs(self, slot: WorkerPlace, records: list[logging.LogRecord]) -> None:
        for record in records:
            record.msg = f"worker {slot.index}: {record.msg}"
            logging.getLogger(record.name).handle(record)

    # -- sharing and closing -----------------------------------------------------------

    def retain(self) -> None:
        """One more user (a model's queue, a batched stage's) until :meth:`release`."""
        with self._cond:
            self._users += 1

    def release(self) -> None:
        """A user is done; the last one closes the pool."""
        with self._cond:
            self._users -= 1
            last = self._users == 0
        if last:
            self.close()

    def close(self) -> None:
        """Stop every worker (asking first, then killing) and remove its shared memory.

        In a child forked from the process that made the pool, it does nothing: the
        workers, pipes and segments are the parent's."""
        if os.getpid() != self._owner:
            return
        with self._cond:
            if self._closing.is_set():
                return
            self._closing.set()
            self._cond.notify_all()
            asking = [s.commands for s in self._slots if s.commands is not None and not s.busy]
        for commands in asking:
            try:
                protocol.send(commands, Stop())
            except Exception:  # gone meanwhile: it is killed below if need be
                pass
        deadline = time.monotonic() + STOP_GRACE
        for slot in self._slots:
            process = slot.process
            if process is not None and not wait_quietly(process, deadline - time.monotonic()):
                process.kill()
                wait_quietly(process, STOP_GRACE)
        for keeper in self._keepers:
            if keeper is not threading.current_thread():
                keeper.join(STOP_GRACE)
        for slot in self._slots:
            process = slot.process  # one restarted meanwhile, if any
            if process is not None and process.poll() is None:
                process.kill()
                wait_quietly(process, STOP_GRACE)
            if slot.state is not WorkerState.FAILED:
                slot.state = WorkerState.STOPPED
            if slot.commands is not None or slot.replies is not None:
                self._discard(slot)
        try:
            sweep(self.prefix)  # skips what it may not remove: never fails a close
        finally:
            self._closed.set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until every worker has exited (after the last user released the pool)."""
        return self._closed.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def info(self) -> tuple[WorkerInfo, ...]:
        with self._cond:
            return tuple(slot.info() for slot in self._slots)


@atexit.register
def _close_all() -> None:
    """The program is exiting without closing its runtimes: leave no worker behind."""
    for pool in list(_pools):
        try:
            pool.close()
        except Exception:  # at exit, nothing may stop the others from closing
            logger.exception("closing %r at exit failed", pool)

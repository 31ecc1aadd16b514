"""Calling a mindserve application on Ray Serve with Runtime.infer's shape."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from mindserve._calls import Request
from mindserve._crossing import restore_traceback
from mindserve._errors import (
    ArgumentTypeError,
    DeadlineExceededError,
    InferenceError,
    InstanceError,
    InvalidArgumentError,
    WorkerError,
    counted,
    describe,
    is_int,
)
from mindserve._serving.versions import check_version_number
from mindserve.ray._replica import ReplicaStatus, Reply
from mindserve.ray._require import ray, serve

logger = logging.getLogger("mindserve.ray")

#: Where a replica's errors were raised, for their tracebacks.
_REPLICA = "the Ray Serve replica"


class Client:
    """Calls the servable of a :func:`mindserve.ray.application` through a Ray Serve handle.

    ``handle`` is what ``ray.serve.run(app)`` returns, or
    ``ray.serve.get_app_handle(name)`` / ``get_deployment_handle(...)``.
    :meth:`infer` and :meth:`ainfer` take the arguments of :meth:`mindserve.Runtime.infer`
    without the servable (an application serves one) and give the same results and raise
    the same errors as in-process: numpy arrays arrive as numpy arrays (read-only, as Ray
    delivers them), a failed instance as the same :class:`~mindserve.InstanceError` subclass
    with the same attributes (its replica-side traceback as its ``__cause__``), a failed
    call as the same error class.

    Calls travel together: while ``in_flight`` Ray Serve requests of this Client are
    waiting for replicas, the calls made meanwhile go in the next request, as one group
    (they are still separate calls in the replica, batched with its other calls). A lone
    call is sent at once. This keeps Ray's per-request cost from bounding throughput when
    many callers share a Client; raise ``in_flight`` for applications with many replicas.

    A call whose replica dies under it (the actor is killed, its node is lost) is sent
    again up to ``retries`` times, to another replica or to the one Ray Serve starts in its
    place; then :class:`~mindserve.WorkerError` is raised. A Client can be passed to other
    deployments (it pickles as its handle and options).
    """

    def __init__(self, handle: Any, *, retries: int = 1, in_flight: int = 8) -> None:
        if not isinstance(handle, serve.handle.DeploymentHandle):
            raise ArgumentTypeError(
                f"Client takes a Ray Serve DeploymentHandle (what serve.run(app) or "
                f"serve.get_app_handle(name) returns); got {type(handle).__name__}"
            )
        if not is_int(retries, 0):
            raise InvalidArgumentError(f"retries must be an int >= 0; got {retries!r}")
        if not is_int(in_flight, 1):
            raise InvalidArgumentError(f"in_flight must be an int >= 1; got {in_flight!r}")
        self.handle = handle
        self.retries = retries
        self.in_flight = in_flight
        self._sender = _Sender(handle, in_flight)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.handle, self.retries, self.in_flight))

    def __repr__(self) -> str:
        return f"<mindserve.ray.Client of {self.handle.deployment_name!r} in {self.handle.app_name!r}>"

    def infer(
        self,
        method: str,
        instances: Sequence[dict[str, Any]],
        *,
        version: int = 0,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run ``method`` on ``instances`` in one of the application's replicas, as
        :meth:`mindserve.Runtime.infer` does in-process. Blocks; not for use inside an event
        loop (use :meth:`ainfer` there)."""
        request = _check(method, version, return_exceptions, timeout)
        future = asyncio.run_coroutine_threadsafe(self._call(method, instances, version, request), _loop())
        return _unpack(future.result(), return_exceptions)

    async def ainfer(
        self,
        method: str,
        instances: Sequence[dict[str, Any]],
        *,
        version: int = 0,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> list[Any]:
        """:meth:`infer`, awaitable (in a driver's event loop, or in another deployment).
        Cancelling the awaiting task gives up the call."""
        request = _check(method, version, return_exceptions, timeout)
        future = asyncio.run_coroutine_threadsafe(self._call(method, instances, version, request), _loop())
        return _unpack(await asyncio.wrap_future(future), return_exceptions)

    def status(self) -> ReplicaStatus:
        """The status of one replica (whichever the handle picks) and of its servable."""
        return self.handle.status.remote().result()  # type: ignore[no-any-return]

    async def astatus(self) -> ReplicaStatus:
        """:meth:`status`, awaitable."""
        return await self.handle.status.remote()  # type: ignore[no-any-return]

    async def _call(self, method: str, instances: Any, version: int, request: Request) -> Reply:
        """One call, on the client loop: sent (again if its replica dies) until it has a reply."""
        deaths: list[BaseException] = []
        while True:
            remaining = _remaining(request, method)
            reply = self._sender.submit((method, instances, version, request))
            try:
                return await asyncio.wait_for(reply, remaining)
            except asyncio.TimeoutError:
                raise _deadline(method, request.timeout) from None
            except ray.exceptions.RayActorError as exc:
                self._died(exc, deaths, method)

    def _died(self, exc: BaseException, deaths: list[BaseException], method: str) -> None:
        """A replica died under the call: send it again, or raise WorkerError."""
        deaths.append(exc)
        if len(deaths) <= self.retries:
            logger.warning(
                "the Ray Serve replica running a call of method '%s' died (%s); sending it again",
                method,
                describe(exc, first_line=True),
            )
            return
        raise WorkerError(
            f"the Ray Serve replicas running this call of method '{method}' died "
            f"{counted(len(deaths), 'time')} (the last: {describe(exc, first_line=True)}); it is not "
            f"sent again (retries={self.retries}). Hint: Ray Serve replaces dead replicas; see "
            f"serve.status() and the replicas' logs for why they died."
        ) from exc


def _rebuild(handle: Any, retries: int, in_flight: int) -> Client:
    return Client(handle, retries=retries, in_flight=in_flight)


class _Sender:
    """Sends a Client's calls, grouping those made while ``limit`` requests are in flight.
    Used on the client loop only."""

    def __init__(self, handle: Any, limit: int) -> None:
        self.handle = handle
        self.limit = limit
        self.pending: list[tuple[tuple[str, Any, int, Request], asyncio.Future[Reply]]] = []
        self.in_flight = 0

    def submit(self, call: tuple[str, Any, int, Request]) -> asyncio.Future[Reply]:
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.pending.append((call, reply))
        if self.in_flight < self.limit:
            self._flush()
        return reply

    def _flush(self) -> None:
        group = [(call, reply) for call, reply in self.pending if not reply.done()]  # not given up
        self.pending = []
        if group:
            self.in_flight += 1
            asyncio.get_running_loop().create_task(self._send(group))

    async def _send(self, group: list[tuple[tuple[str, Any, int, Request], asyncio.Future[Reply]]]) -> None:
        try:
            calls = [
                (method, instances, version, _left(request))
                for (method, instances, version, request), _ in group
            ]
            if len(calls) == 1:
                replies = [await self.handle.infer.remote(*calls[0])]
            else:
                replies = await self.handle.infer_many.remote(calls)
        except BaseException as exc:  # the request failed as a whole: every call in it did
            for _, reply in group:
                if not reply.done():
                    reply.set_exception(exc)
        else:
            for (_, reply), result in zip(group, replies):
                if not reply.done():
                    reply.set_result(result)
        finally:
            self.in_flight -= 1
            if self.pending:
                self._flush()


_client_loop: tuple[int, asyncio.AbstractEventLoop] | None = None
_client_loop_lock = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    """The event loop (on a daemon thread, one per process: a child made by fork() starts
    its own) on which Clients send calls."""
    global _client_loop
    with _client_loop_lock:
        if _client_loop is None or _client_loop[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mindserve-ray-client", daemon=True).start()
            _client_loop = (os.getpid(), loop)
        return _client_loop[1]


def _check(method: object, version: object, return_exceptions: object, timeout: object) -> Request:
    """Refuse wrong arguments here, as the runtime would; the call's deadline."""
    if not isinstance(method, str):
        raise ArgumentTypeError(f"method must be a str; got {type(method).__name__}")
    check_version_number(version)
    if not isinstance(return_exceptions, bool):
        raise ArgumentTypeError(f"return_exceptions must be True or False; got {return_exceptions!r}")
    return Request(timeout)  # type: ignore[arg-type]


def _remaining(request: Request, method: str) -> float | None:
    remaining = request.remaining()
    if remaining is not None and remaining <= 0:
        raise _deadline(method, request.timeout)
    return remaining


def _left(request: Request) -> float | None:
    """What is left of a call's timeout as it is sent (0 once passed: the replica then
    raises DeadlineExceededError at once, as it would have here)."""
    remaining = request.remaining()
    return None if remaining is None else max(0.0, remaining)


def _deadline(method: str, timeout: float | None) -> DeadlineExceededError:
    error = DeadlineExceededError(
        f"method '{method}': the call's timeout of {timeout} s passed before a replica answered "
        f"(it waited in Ray Serve's queues or the replica was busy)"
    )
    error.method = method
    return error


def _unpack(reply: Reply, return_exceptions: bool) -> list[Any]:
    """The call's results as Runtime.infer gives them, or its error raised."""
    if reply.error is not None:
        raise restore_traceback(reply.error, _REPLICA)
    assert reply.results is not None
    results = [restore_traceback(r, _REPLICA) if isinstance(r, InstanceError) else r for r in reply.results]
    if not return_exceptions and any(isinstance(r, InstanceError) for r in results):
        raise InferenceError(results)
    return results

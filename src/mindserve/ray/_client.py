"""Calling a mindserve application on Ray Serve with Runtime.infer's shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from mindserve._calls import Request
from mindserve._errors import (
    ArgumentTypeError,
    DeadlineExceededError,
    InferenceError,
    InstanceError,
    InvalidArgumentError,
    WorkerError,
    counted,
    describe,
)
from mindserve._serving.versions import check_version_number
from mindserve._workers.child import restore_traceback
from mindserve.ray._replica import Reply, ReplicaStatus
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
    the same errors as in-process: numpy arrays arrive as numpy arrays, a failed instance as
    the same :class:`~mindserve.InstanceError` subclass with the same attributes (its
    replica-side traceback as its ``__cause__``), a failed call as the same error class.

    A call whose replica dies under it (the actor is killed, its node is lost) is sent
    again up to ``retries`` times, to another replica or to the one Ray Serve starts in its
    place; then :class:`~mindserve.WorkerError` is raised. A Client can be passed to other
    deployments (its handle pickles).
    """

    def __init__(self, handle: Any, *, retries: int = 1) -> None:
        if not isinstance(handle, serve.handle.DeploymentHandle):
            raise ArgumentTypeError(
                f"Client takes a Ray Serve DeploymentHandle (what serve.run(app) or "
                f"serve.get_app_handle(name) returns); got {type(handle).__name__}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError(f"retries must be an int >= 0; got {retries!r}")
        self.handle = handle
        self.retries = retries

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
        deaths: list[BaseException] = []
        while True:
            remaining = _remaining(request, method)
            response = self.handle.infer.remote(method, instances, version, remaining)
            try:
                reply = response.result(timeout_s=remaining)
            except TimeoutError:
                response.cancel()
                raise _deadline(method, timeout) from None
            except ray.exceptions.RayActorError as exc:
                self._died(exc, deaths, method)
                continue
            return _unpack(reply, return_exceptions)

    async def ainfer(
        self,
        method: str,
        instances: Sequence[dict[str, Any]],
        *,
        version: int = 0,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> list[Any]:
        """:meth:`infer`, awaitable (in a driver's event loop, or in another deployment)."""
        request = _check(method, version, return_exceptions, timeout)
        deaths: list[BaseException] = []
        while True:
            remaining = _remaining(request, method)
            response = self.handle.infer.remote(method, instances, version, remaining)
            try:
                reply = await asyncio.wait_for(_wait(response), remaining)
            except asyncio.TimeoutError:
                raise _deadline(method, timeout) from None
            except ray.exceptions.RayActorError as exc:
                self._died(exc, deaths, method)
                continue
            return _unpack(reply, return_exceptions)

    def status(self) -> ReplicaStatus:
        """The status of one replica (whichever the handle picks) and of its servable."""
        return self.handle.status.remote().result()  # type: ignore[no-any-return]

    async def astatus(self) -> ReplicaStatus:
        """:meth:`status`, awaitable."""
        return await self.handle.status.remote()  # type: ignore[no-any-return]

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


def _deadline(method: str, timeout: float | None) -> DeadlineExceededError:
    error = DeadlineExceededError(
        f"method '{method}': the call's timeout of {timeout} s passed before a replica answered "
        f"(it waited in Ray Serve's queues or the replica was busy)"
    )
    error.method = method
    return error


async def _wait(response: Any) -> Any:
    """Await a DeploymentResponse; cancel it if the awaiting task is cancelled."""
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise


def _unpack(reply: Reply, return_exceptions: bool) -> list[Any]:
    """The call's results as Runtime.infer gives them, or its error raised."""
    if reply.error is not None:
        raise restore_traceback(reply.error, _REPLICA)
    assert reply.results is not None
    results = [restore_traceback(r, _REPLICA) if isinstance(r, InstanceError) else r for r in reply.results]
    if not return_exceptions and any(isinstance(r, InstanceError) for r in results):
        raise InferenceError(results)
    return results

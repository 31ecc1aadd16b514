"""The ASGI application: MindSpore Serving's RESTful protocol over a runtime, on Starlette."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import numpy as np

from mindserve._errors import (
    ArgumentTypeError,
    DeadlineExceededError,
    ExtraUnavailableError,
    InstanceError,
    InvalidInputError,
    MindServeError,
    NotFoundError,
    OverloadedError,
    RuntimeClosedError,
    ServableNotFoundError,
)
from mindserve._runtime import Runtime
from mindserve._serving_wording import instance_message, one_error, request_error
from mindserve.http._json import dumps
from mindserve.http._protocol import INSTANCES, Limits, Refused, Target, parse_body, parse_target, short
from mindserve.http._reply import Unsendable, native_json, tensor_json

ERROR_MSG = "error_msg"

logger = logging.getLogger("mindserve.http")

#: Bodies (and replies) larger than this are parsed (and written) in a thread, off the loop.
_OFF_LOOP = 256 * 2**10
#: How much of a too large body is still read (and dropped) so the client hears the reply.
_DRAIN = 64 * 2**20
_JSON_TYPE = (b"content-type", b"application/json")


def require(module: str) -> Any:
    """Import an optional dependency of ``mindserve[http]``, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExtraUnavailableError(
            f"mindserve.http needs {module.split('.')[0]}, which is not installed ({exc}). "
            f"Hint: pip install 'mindserve[http]'"
        ) from exc


class RestApp:
    """An ASGI application answering MindSpore Serving's RESTful requests
    (``POST /model/<servable>[/version/<n>]:<method>``) with a runtime's servables.

    Mount it in a Starlette or FastAPI app (``app.mount("/serving", RestApp(rt))``) or run it
    with any ASGI server (``uvicorn.run(RestApp(rt))``, or :class:`BackgroundServer`). Each
    request is one ``await runtime.ainfer(...)``, so requests of many HTTP callers are
    batched together.

    Limits (each refused with MindSpore Serving's error reply, never read into memory
    beyond them): ``max_body_size`` bytes of body (checked against ``Content-Length`` and
    while the body streams in), ``max_instances`` per request, ``max_depth`` dimensions of
    an array. ``http_status``: ``False`` (MindSpore Serving's way) answers every request
    with status 200 and the error in the JSON; ``True`` gives refused and failed requests a
    4xx or 5xx status as well (the body is the same): a request whose every instance failed
    on its input (a stage may raise :class:`~mindserve.InvalidInputError`) is a 400, one whose
    every instance failed in the server a 500, one with some results a 200.

    Outputs are sent as JSON whatever they are, if JSON can hold them (numbers, str, lists,
    tuples, dicts with str keys, numpy arrays and scalars; ``bytes`` as ``{"b64": ...}``);
    an output it cannot hold fails its instance. See docs/http.md.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_body_size: int = 16 * 2**20,
        max_instances: int = 1024,
        max_depth: int = 32,
        http_status: bool = False,
    ) -> None:
        if not isinstance(runtime, Runtime):
            raise ArgumentTypeError(f"runtime must be a mindserve.Runtime; got {type(runtime).__name__}")
        self._setup(
            lambda: runtime, Limits(max_body_size, max_instances, max_depth), http_status, native_json
        )

    def _setup(
        self,
        runtime_of: Callable[[], Runtime | None],
        limits: Limits,
        http_status: bool,
        output_json: Callable[[Any], Any],
    ) -> None:
        # (the app speaks ASGI itself, one receive and two sends per request, but it is the
        # ``http`` extra's: without it, it says how to install it)
        require("starlette.requests")
        if not isinstance(http_status, bool):
            raise ArgumentTypeError(f"http_status must be True or False; got {http_status!r}")
        self._runtime_of = runtime_of
        self.limits = limits
        self._http_status = http_status
        #: One output as the reply holds it (``Unsendable`` when it cannot be sent).
        self._output_json = output_json
        #: Called before and after each call to a servable (compat: the queue limit).
        self._admit: Callable[[], str | None] = lambda: None
        self._release: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        return f"<mindserve.http.RestApp {self.limits}>"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        try:
            answer = await self._answer(scope, receive)
        except Exception as exc:  # never a crashed request: a reply that says what happened
            logger.exception("mindserve.http: request to %s failed", scope.get("path"))
            answer = self._reply({ERROR_MSG: f"Serving Error: {type(exc).__name__}: {exc}"}, 500)
        if answer is None:  # the client went away before its body arrived
            return
        body, status = answer
        headers = [(b"content-length", b"%d" % len(body)), _JSON_TYPE]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: dict[str, Any], receive: Any) -> tuple[bytes, int] | None:
        try:
            if scope.get("method") != "POST":
                raise Refused("http message only support POST right now", 405)
            target = parse_target(_route_path(scope))
            body = await self._read(scope, receive)
            if body is None:
                return None
            if len(body) > _OFF_LOOP:
                instances = await asyncio.to_thread(parse_body, body, self.limits)
            else:
                instances = parse_body(body, self.limits)
        except Refused as exc:
            return self._reply({ERROR_MSG: exc.message}, exc.status)
        return await self._call(target, instances)

    async def _read(self, scope: dict[str, Any], receive: Any) -> bytes | None:
        """The body, or ``None`` when the client disconnected; ``Refused`` past the limit,
        having read no more of it than the limit (dropping what follows, within bounds)."""
        limit = self.limits.max_body_size
        declared = _content_length(scope)
        if declared is not None and declared > limit + _DRAIN:  # not even drained: refused at once
            raise Refused(f"http message is bigger than {limit}", 413)
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return None
        more = message.get("more_body", False)
        if not more and (declared is None or declared <= limit):  # the whole body at once
            body = message.get("body", b"")
            if len(body) > limit:
                raise Refused(f"http message is bigger than {limit}", 413)
            return bytes(body)
        return await self._read_more(message, receive, declared)

    async def _read_more(self, message: dict[str, Any], receive: Any, declared: int | None) -> bytes | None:
        """A body that comes in several messages (or is declared too big), from its first."""
        limit = self.limits.max_body_size
        too_big = Refused(f"http message is bigger than {limit}", 413)
        drop_all = declared is not None and declared > limit  # read to its end, kept nowhere
        body = bytearray()
        dropped = 0
        while True:
            chunk = message.get("body", b"")
            if dropped:
                dropped += len(chunk)
                if dropped > limit + _DRAIN:
                    break
            elif not drop_all:
                body += chunk
                if len(body) > limit:
                    dropped, body = len(body), bytearray()
            if not message.get("more_body", False):
                break
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                return None
        if dropped or drop_all:
            raise too_big
        return bytes(body)

    async def _call(self, target: Target, instances: list[dict[str, Any]]) -> tuple[bytes, int]:
        full = self._admit()
        if full is not None:
            return self._reply({ERROR_MSG: full}, 503)
        try:
            runtime = self._runtime_of()
            if runtime is None:
                raise ServableNotFoundError(f"no servable named {target.servable!r} is running")
            results = await runtime.ainfer(
                target.servable, target.method, instances, version=target.version, return_exceptions=True
            )
        except MindServeError as exc:
            message = request_error(target.servable, target.method, target.version, exc)
            for name in {target.servable, target.method}:  # a long name is echoed once, shortened
                if len(name) > 60:
                    message = message.replace(name, short(name))
            return self._reply({ERROR_MSG: message}, _status(exc))
        finally:
            self._release()
        status = _results_status(results)
        single = one_error(results)
        if single is not None:
            return self._reply({ERROR_MSG: single}, status)
        size = sum(
            v.nbytes for r in results if isinstance(r, dict) for v in r.values() if isinstance(v, np.ndarray)
        )
        if size > _OFF_LOOP:
            return await asyncio.to_thread(self._instances_reply, results, status)
        return self._instances_reply(results, status)

    def _instances_reply(self, results: list[Any], status: int) -> tuple[bytes, int]:
        instances = [self._instance_reply(r) for r in results]
        try:
            return self._reply({INSTANCES: instances}, status)
        except (TypeError, ValueError):  # text JSON cannot hold (a lone surrogate): its instance fails
            return self._reply({INSTANCES: [_sendable(i) for i in instances]}, status)

    def _instance_reply(self, result: Any) -> dict[str, Any]:
        if isinstance(result, InstanceError):
            return {ERROR_MSG: instance_message(result)}
        outputs = {}
        for name, value in result.items():
            try:
                outputs[name] = self._output_json(value)
            except Unsendable as exc:
                return {ERROR_MSG: f"Failed to construct the response: output '{short(name)}': {exc}"}
        return outputs

    def _reply(self, reply: dict[str, Any], status: int) -> tuple[bytes, int]:
        if set(reply) == {ERROR_MSG}:
            reply = {ERROR_MSG: _text(reply[ERROR_MSG])}
        return dumps(reply), status if self._http_status else 200


def _sendable(instance: dict[str, Any]) -> dict[str, Any]:
    """An instance's reply, or its error when JSON text cannot hold it."""
    try:
        dumps(instance)
    except (TypeError, ValueError) as exc:
        message = instance.get(ERROR_MSG)
        if isinstance(message, str):
            return {ERROR_MSG: _text(message)}
        return {ERROR_MSG: f"Failed to construct the response: an output JSON text cannot hold ({exc})"}
    return instance


def _text(message: str) -> str:
    """A message as Unicode text (a lone surrogate in it, from a user's exception, escaped)."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message


def _results_status(results: list[Any]) -> int:
    """The HTTP status of a request that reached a servable (with ``http_status=True``):
    200 unless every instance failed; then 400 when each failed on its input, else the
    status their errors share, else 500."""
    if not results or not all(isinstance(r, InstanceError) for r in results):
        return 200
    statuses = {_status(r) for r in results}
    return statuses.pop() if len(statuses) == 1 else 500


def is_invalid_input(error: BaseException) -> bool:
    """Whether an error is the client's: a bad argument or input, or a stage that raised
    :class:`~mindserve.InvalidInputError` (which reaches the caller as the ``__cause__`` of
    the instance's :class:`~mindserve.StageError`)."""
    seen: BaseException | None = error
    for _ in range(8):  # a bounded walk down the causes
        if seen is None:
            return False
        if isinstance(seen, (InvalidInputError, ArgumentTypeError)) or (
            seen is error and isinstance(seen, ValueError)
        ):
            return True
        seen = seen.__cause__
    return False


def _status(error: BaseException) -> int:
    """The HTTP status a failed request (or instance) gets with ``http_status=True``."""
    if isinstance(error, NotFoundError):
        return 404
    if is_invalid_input(error):
        return 400
    if isinstance(error, (OverloadedError, RuntimeClosedError)):
        return 503
    if isinstance(error, DeadlineExceededError):
        return 504
    return 500


def _route_path(scope: dict[str, Any]) -> str:
    """The request's path below where the app is mounted."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _lifespan(receive: Any, send: Any) -> None:
    """Nothing to start or stop: the runtime belongs to the caller."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def compat_app(
    runtime_of: Callable[[], Runtime | None],
    admit: Callable[[], str | None],
    release: Callable[[], None],
    limits: Limits,
) -> RestApp:
    """The app ``mindserve.compat.server.start_restful_server`` serves: the runtime is looked
    up at each request (servables may start after the server), and MindSpore Serving's
    queue limit applies."""
    app = RestApp.__new__(RestApp)
    app._setup(runtime_of, limits, False, tensor_json)
    app._admit = admit
    app._release = release
    return app

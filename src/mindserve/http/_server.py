"""uvicorn serving an ASGI app from a background thread of this process."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import TracebackType
from typing import Any

from mindserve._errors import ArgumentTypeError, InvalidArgumentError, is_int
from mindserve.http._app import require

logger = logging.getLogger("mindserve.http")


class BackgroundServer:
    """Serve an ASGI app (a :class:`RestApp`, or a FastAPI or Starlette app) with uvicorn on
    a thread of this process, listening on ``host:port`` from the moment it is made
    (``port=0``: a free port, see :attr:`port`). :meth:`stop` (or leaving the ``with``
    block) stops accepting, lets the requests in flight finish, and joins the thread.

        with BackgroundServer(RestApp(rt), port=8080) as server:
            ...  # POST http://127.0.0.1:8080/model/<servable>:<method>

    A client has ``body_timeout`` seconds (30; ``None``: no limit) from the start of its
    request to send the whole body, else it gets a 408 and its connection closes, and the
    body read so far is dropped. At most ``limit_concurrency`` connections and requests (256;
    ``None``: no limit) are served at once; past that, requests get a 503. So what slow
    clients can hold is bounded: about ``limit_concurrency`` times the app's body limit, for
    ``body_timeout`` seconds.

    Other keyword arguments go to ``uvicorn.Config`` (``timeout_keep_alive``,
    ``ssl_certfile``, ...). uvicorn logs through the ``uvicorn``
    loggers, leaving this process's logging configuration alone; access logs are off unless
    ``access_log=True``. A certificate that fails to load, or an address that cannot be
    bound, raises ``OSError`` (``ssl.SSLError`` is one).
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        body_timeout: float | None = 30.0,
        limit_concurrency: int | None = 256,
        **uvicorn_options: Any,
    ) -> None:
        uvicorn = require("uvicorn")
        if not isinstance(host, str) or not host:
            raise ArgumentTypeError(f"host must be a non-empty str; got {host!r}")
        if not is_int(port):
            raise ArgumentTypeError(f"port must be an int; got {port!r}")
        if not 0 <= port <= 65535:
            raise InvalidArgumentError(f"port must be in [0, 65535] (0: any free port); got {port}")
        if body_timeout is not None:
            if (
                isinstance(body_timeout, bool)
                or not isinstance(body_timeout, (int, float))
                or not body_timeout > 0
            ):
                raise InvalidArgumentError(f"body_timeout must be a number > 0 or None; got {body_timeout!r}")
            app = BodyTimeout(app, float(body_timeout))
        options = {
            "log_config": None,
            "access_log": False,
            "lifespan": "auto",
            "limit_concurrency": limit_concurrency,
            **uvicorn_options,
        }
        config = uvicorn.Config(app, **options)
        config.load()  # here, not in the thread: a certificate that fails to load raises now
        self._server = uvicorn.Server(config)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        self._socket = socket.create_server((host, port), family=family, backlog=2048)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._failure: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"mindserve-http-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://host:port`` (``https`` with ``ssl_certfile``)."""
        scheme = "https" if self._server.config.ssl_certfile else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # a failed startup is a SystemExit in uvicorn
            self._failure = exc
            logger.error("mindserve.http: the server on %s:%s stopped: %r", self.host, self.port, exc)
        finally:
            self._socket.close()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop accepting, finish the requests in flight, join the thread. Idempotent."""
        if not self._stopped:
            self._stopped = True
            self._server.should_exit = True
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the server thread is still serving."""
        return self._thread.is_alive() and not self._stopped

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<mindserve.http.BackgroundServer {state} on {self.url}>"

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class BodyTimeout:
    """An ASGI app around another that gives each request ``seconds`` to deliver its body:
    past that, the app sees the client disconnect (dropping what it read) and the client
    gets a 408 and a closed connection."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = timed_out = started = False

        async def timed_receive() -> dict[str, Any]:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()  # type: ignore[no-any-return]
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                timed_out = body_done = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message  # type: ignore[no-any-return]

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if timed_out and not started:
                return  # the 408 below answers; what the app says after the disconnect is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except Exception:
            if not timed_out:
                raise
        if timed_out and not started:
            text = f'{{"error_msg":"the request body did not arrive within {self.seconds:g} s"}}'.encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(text)).encode()),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 408, "headers": headers})
            await send({"type": "http.response.body", "body": text})

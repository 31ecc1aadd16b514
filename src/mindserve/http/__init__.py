"""MindSpore Serving's RESTful protocol as an ASGI app (the ``mindserve[http]`` extra).

* :class:`RestApp` answers ``POST /model/<servable>[/version/<n>]:<method>`` with a
  runtime's servables; mount it in a FastAPI or Starlette app, or run it with an ASGI server.
* :class:`BackgroundServer` runs an ASGI app with uvicorn on a thread of this process.
* :class:`BodyTimeout` wraps an ASGI app so that a client that is slow to send its body
  gets a 408 (``BackgroundServer`` does this by itself; uvicorn alone does not).

Starlette and uvicorn are imported when a :class:`RestApp` or :class:`BackgroundServer`
is made (an :class:`~mindserve.ExtraUnavailableError` says how to install them), never by
``import mindserve``. See docs/http.md.
"""

from mindserve.http._app import RestApp
from mindserve.http._server import BackgroundServer, BodyTimeout

__all__ = ["BackgroundServer", "BodyTimeout", "RestApp"]

"""Building the Ray Serve application of a servable."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from mindserve._define.servable import Servable
from mindserve._errors import ArgumentTypeError, InvalidArgumentError, is_int
from mindserve._runtime import Runtime
from mindserve._serving.versions import check_version_number
from mindserve.http import RestApp
from mindserve.ray._replica import HttpReplica, Replica, check_factory
from mindserve.ray._require import serve

#: Ray Serve's default (5) would keep most callers queued in the handles, where nothing
#: batches them; mindserve's scheduler wants every pending call in the replica.
DEFAULT_MAX_ONGOING_REQUESTS = 256

#: What ``runtime_options`` may hold: Runtime's keyword arguments.
_RUNTIME_OPTIONS = frozenset(inspect.signature(Runtime).parameters)

#: What ``http`` may hold: RestApp's keyword arguments (mindserve.http imports without Starlette).
_HTTP_OPTIONS = frozenset(inspect.signature(RestApp).parameters) - {"runtime"}


def application(
    factory: str | Callable[..., Servable],
    *,
    factory_args: Sequence[Any] = (),
    factory_kwargs: Mapping[str, Any] | None = None,
    version: int = 0,
    workers: int | None = None,
    device_ids: Sequence[int] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    http: bool | Mapping[str, Any] = True,
    name: str = "mindserve",
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    **deployment_options: Any,
) -> Any:
    """A Ray Serve application serving the servable that ``factory`` builds.

    ``factory`` is an importable function returning the :class:`mindserve.Servable`, given as
    ``"package.module:function"`` or as the function; each replica calls it with
    ``factory_args`` and ``factory_kwargs`` (which must pickle), then starts the servable
    in its own :class:`mindserve.Runtime` (``Runtime(**runtime_options)``) at ``version``
    (0: the newest), with ``workers`` or ``device_ids`` when given (see
    :meth:`mindserve.Runtime.start`).

    ``http``: the application also answers MindSpore Serving's RESTful requests through Ray
    Serve's HTTP proxy (``POST <route_prefix>/model/<servable>[/version/<n>]:<method>``),
    each replica with a :class:`mindserve.http.RestApp` over its runtime; a dict gives the
    RestApp's options (``max_body_size``, ``max_instances``, ``max_depth``,
    ``http_status``); ``False``: handles only.

    ``name`` is the deployment's name. ``max_ongoing_requests`` is how many calls Ray Serve
    lets into one replica at a time; mindserve batches those, so it is much higher than
    Ray Serve's default. Every other keyword (``num_replicas``, ``autoscaling_config``,
    ``ray_actor_options`` with ``num_cpus``, ``resources``, ``runtime_env``, ...) goes to
    ``ray.serve.deployment`` as it is.

    Run it with ``handle = ray.serve.run(app, name=...)`` and call it with
    ``mindserve.ray.Client(handle)``. Running it again with another ``version`` is a Ray
    Serve rolling update (see docs/ray.md).
    """
    check_factory(factory)
    if isinstance(factory_args, (str, bytes)) or not isinstance(factory_args, Sequence):
        raise ArgumentTypeError(f"factory_args must be a tuple or list; got {type(factory_args).__name__}")
    if factory_kwargs is not None and not isinstance(factory_kwargs, Mapping):
        raise ArgumentTypeError(f"factory_kwargs must be a dict; got {type(factory_kwargs).__name__}")
    check_version_number(version)
    start: dict[str, Any] = {"version": version}
    if workers is not None:
        start["workers"] = workers
    if device_ids is not None:
        start["device_ids"] = list(device_ids)
    options = dict(runtime_options or {})
    unknown = sorted(set(options) - _RUNTIME_OPTIONS)
    if unknown:
        raise InvalidArgumentError(
            f"runtime_options are mindserve.Runtime's arguments {sorted(_RUNTIME_OPTIONS)}; got {unknown}"
        )
    if not isinstance(http, (bool, Mapping)):
        raise ArgumentTypeError(
            f"http must be True, False or a dict of RestApp options; got {type(http).__name__}"
        )
    http_options = dict(http) if isinstance(http, Mapping) else {}
    unknown = sorted(set(http_options) - _HTTP_OPTIONS)
    if unknown:
        raise InvalidArgumentError(
            f"http options are RestApp's arguments {sorted(_HTTP_OPTIONS)}; got {unknown}"
        )
    if not is_int(max_ongoing_requests, 1):
        raise InvalidArgumentError(f"max_ongoing_requests must be an int >= 1; got {max_ongoing_requests!r}")
    deployment = serve.deployment(HttpReplica if http is not False else Replica)
    deployment = deployment.options(  # type: ignore[attr-defined]
        name=name, max_ongoing_requests=max_ongoing_requests, **deployment_options
    )
    return deployment.bind(
        factory, tuple(factory_args), dict(factory_kwargs or {}), start, options, http_options
    )

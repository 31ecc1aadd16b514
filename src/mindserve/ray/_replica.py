"""One Ray Serve replica: the servable built by its factory, running in a Runtime.

Ray Serve makes one instance of :class:`Replica` in each replica actor, on whichever node
has the resources, and calls its methods from the actor's event loop: ``infer`` awaits
:meth:`Runtime.ainfer`, so the calls that reach a replica at the same time are batched by
mindserve's scheduler.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import attrs

from mindserve._crossing import portable_error
from mindserve._define.servable import Servable
from mindserve._errors import ArgumentTypeError, DefinitionError, InstanceError, describe
from mindserve._observe.snapshot import Metrics
from mindserve._observe.status import ServableStatus
from mindserve._runtime import Runtime
from mindserve.ray._require import serve


def check_factory(factory: object) -> None:
    """Refuse what cannot be a factory, in the driver, before Ray Serve is involved."""
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        if (
            not module
            or not name
            or not all(part.isidentifier() for part in (*module.split("."), *name.split(".")))
        ):
            raise DefinitionError(
                f"a servable factory given as a string must be 'package.module:function'; got {factory!r}"
            )
    elif isinstance(factory, Servable):
        raise DefinitionError(
            f"application() takes a factory that returns the servable, not the servable "
            f"'{factory.name}' itself: every replica builds its own, on its own node. Hint: move the "
            f"definition into a function (def make(): svc = mindserve.Servable(...); ...; return svc) "
            f"in an importable module, and pass 'module:make' or make."
        )
    elif not callable(factory):
        raise ArgumentTypeError(
            f"a servable factory must be a 'module:function' string or a function; "
            f"got {type(factory).__name__}"
        )


def resolve_factory(factory: str | Callable[..., Servable]) -> Callable[..., Servable]:
    """The factory function, imported when given as ``"module:function"``."""
    check_factory(factory)
    if not isinstance(factory, str):
        return factory
    module_name, _, qualname = factory.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise DefinitionError(
            f"the servable factory {factory!r} cannot be imported here (pid {os.getpid()}): "
            f"{describe(exc)}. Hint: the module must be importable on every Ray node (installed, or "
            f"shipped with the application's runtime_env)."
        ) from exc
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise DefinitionError(
                f"the servable factory {factory!r}: module '{module_name}' has no attribute {qualname!r}"
            ) from None
    if not callable(found):
        raise DefinitionError(f"the servable factory {factory!r} is a {type(found).__name__}, not a function")
    return found  # type: ignore[no-any-return]


def build_servable(
    factory: str | Callable[..., Servable], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> Servable:
    """Call the factory and check that it made a servable."""
    function = resolve_factory(factory)
    servable = function(*args, **(kwargs or {}))
    if not isinstance(servable, Servable):
        raise DefinitionError(
            f"the servable factory {_name(factory)} returned {type(servable).__name__}, not a "
            f"mindserve.Servable. Hint: end the factory with 'return svc'."
        )
    return servable


def _name(factory: object) -> str:
    if isinstance(factory, str):
        return repr(factory)
    return getattr(factory, "__qualname__", None) or repr(factory)


@attrs.frozen
class Reply:
    """What a replica sends back for a call: its results (the failed instances' errors in
    their places) or the error the whole call raised."""

    results: list[Any] | None = None
    error: BaseException | None = None


@attrs.frozen
class ReplicaStatus:
    """One replica of a mindserve application on Ray Serve, as :meth:`Client.status` reports it."""

    #: Ray Serve's id of the replica (unique in its deployment).
    replica_id: str
    #: The Ray actor running the replica (in the ``"serve"`` namespace), and where it runs.
    actor_name: str
    node_id: str
    pid: int
    #: The Ray resources the replica holds (``{"CPU": 1.0, "NPU": 1.0}``).
    resources: dict[str, float]
    #: The servable in the replica's runtime: its running versions, default, last error.
    servable: ServableStatus
    #: The replica's runtime's :meth:`~mindserve.Runtime.metrics`.
    metrics: Metrics


class Replica:
    """The class Ray Serve deploys (see :func:`mindserve.ray.application`)."""

    def __init__(
        self,
        factory: str | Callable[..., Servable],
        factory_args: Sequence[Any],
        factory_kwargs: Mapping[str, Any],
        start_options: Mapping[str, Any],
        runtime_options: Mapping[str, Any],
        http_options: Mapping[str, Any] | None = None,
    ) -> None:
        servable = build_servable(factory, factory_args, factory_kwargs)
        self.name = servable.name
        self.http_options = dict(http_options or {})
        self.runtime = Runtime(**runtime_options)
        try:
            self.runtime.start(servable, **start_options)
        except BaseException:
            self.runtime.close()
            raise

    async def infer(self, method: str, instances: Any, version: int, timeout: float | None) -> Reply:
        """Run a call in this replica's runtime; every outcome travels in the reply."""
        try:
            results = await self.runtime.ainfer(
                self.name, method, instances, version=version, timeout=timeout, return_exceptions=True
            )
        except Exception as exc:  # the whole call failed: the caller gets the same error
            return Reply(error=portable_error(exc))
        return Reply(results=[portable_error(r) if isinstance(r, InstanceError) else r for r in results])

    async def infer_many(self, calls: list[tuple[str, Any, int, float | None]]) -> list[Reply]:
        """Several calls sent together by a Client; they run concurrently, so their instances
        batch with each other and with every other call in this replica."""
        return list(await asyncio.gather(*(self.infer(*call) for call in calls)))

    def status(self) -> ReplicaStatus:
        """This replica, and the servable in its runtime."""
        import ray
        from ray import serve

        context = ray.get_runtime_context()
        status = self.runtime.servable_status(self.name)
        if status.last_error is not None:
            status = attrs.evolve(status, last_error=portable_error(status.last_error))
        return ReplicaStatus(
            replica_id=serve.get_replica_context().replica_id.unique_id,
            actor_name=context.get_actor_name() or "",
            node_id=context.get_node_id(),
            pid=os.getpid(),
            resources=dict(context.get_assigned_resources()),
            servable=status,
            metrics=self.runtime.metrics(),
        )

    def __del__(self) -> None:
        # Ray Serve calls __del__ when it stops a replica, once its requests have drained:
        # that is its shutdown hook. Garbage collection may call it again; closing a closed
        # runtime does nothing.
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()


class HttpReplica(Replica):
    """:class:`Replica` that also answers HTTP requests arriving through Ray Serve's proxy,
    with MindSpore Serving's RESTful protocol (:class:`mindserve.http.RestApp` over the
    replica's runtime)."""

    def __serve_build_asgi_app__(self) -> Any:
        from mindserve.http import RestApp

        return RestApp(self.runtime, **self.http_options)


# Ray Serve's ASGI ingress wraps the class; the wrapper keeps HttpReplica's name and module,
# so that replicas find it by import.
HttpReplica = serve.ingress()(HttpReplica)  # type: ignore[misc]

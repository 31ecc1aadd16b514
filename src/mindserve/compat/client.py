"""MindSpore Serving 2.0's client, talking to the servables of this process.

Change only the import (``from mindserve.compat.client import Client``); results keep
MindSpore Serving's shape: a list with one dict of outputs per instance, ``{"error":
message}`` in place of a failed instance, and a single ``{"error": message}`` when the
whole request failed (or its only instance did).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from mindserve._errors import InstanceError, InvalidInputError, MindServeError, is_int
from mindserve._serving_wording import instance_message, one_error, request_error
from mindserve.compat import _master_context, server
from mindserve.compat._tensors import client_value

__all__ = ["Client", "SSLConfig"]


class SSLConfig:
    """Accepted for compatibility; there is no network, so nothing to encrypt."""

    def __init__(self, certificate: Any = None, private_key: Any = None, custom_ca: Any = None) -> None:
        self.certificate = certificate
        self.private_key = private_key
        self.custom_ca = custom_ca


def _as_instances(instances: Any) -> list[dict[str, Any]]:
    """The instances with each value as MindSpore Serving's client sends it (Python
    numbers as arrays of shape [1]); ``RuntimeError`` for what that client refuses."""
    items = list(instances) if isinstance(instances, (tuple, list)) else [instances]
    for item in items:
        if not isinstance(item, dict):
            raise RuntimeError("instance should be a map")
    return [{name: client_value(value) for name, value in item.items()} for item in items]


def _shape(results: list[Any]) -> Any:
    """MindSpore Serving's reply: one dict per instance, ``{"error": ...}`` for a failed one;
    a single ``{"error": ...}`` when every instance failed the same way."""
    single = one_error(results)
    if single is not None:
        return {"error": single}
    return [{"error": instance_message(r)} if isinstance(r, InstanceError) else r for r in results]


def _missing_inputs(results: list[Any], items: Sequence[dict[str, Any]]) -> list[Any]:
    """Instances that lack an input of their method, worded as MindSpore Serving words them
    (``Cannot find input x1 in instance input ...``, the method's first missing input,
    whatever else the instance holds), mindserve's detail after."""
    inputs: tuple[str, ...] | None = None
    worded = list(results)
    for index, result in enumerate(results):
        if not isinstance(result, InvalidInputError):
            continue
        if inputs is None:  # only on this failure path: look the method up once
            inputs = _method_inputs(result)
        missing = next((name for name in inputs if name not in items[index]), None)
        if missing is not None:
            worded[index] = InvalidInputError(
                f"Cannot find input {missing} in instance input , servable {result.servable}, method "
                f"{result.method}. {result.detail}",
                servable=result.servable,
                version=result.version,
                method=result.method,
                index=result.index,
            )
    return worded


def _method_inputs(error: InstanceError) -> tuple[str, ...]:
    """The input names of the method an instance error comes from (empty if not running)."""
    for info in server.runtime().status():
        if info.name == error.servable and info.version == error.version:
            for method in info.methods:
                if method.name == error.method:
                    return method.inputs
    return ()


class _AsyncResult:
    """A call's outcome: a future, results already there, or a whole-request error."""

    def __init__(
        self, outcome: Future[Any] | list[Any] | None, error: Any = None, items: Sequence[dict[str, Any]] = ()
    ) -> None:
        self._outcome = outcome
        self._error = error
        self._items = items

    def result(self) -> Any:
        """The results, in the shape ``Client.infer`` returns."""
        if self._outcome is None:
            return self._error
        if isinstance(self._outcome, list):
            return _shape(_missing_inputs(self._outcome, self._items))
        try:
            return _shape(_missing_inputs(self._outcome.result(), self._items))
        except MindServeError as exc:
            return {"error": str(exc)}


class Client:
    """``Client(address, servable_name, method_name, version_number=0)``; the address is ignored."""

    def __init__(
        self,
        address: str,
        servable_name: str,
        method_name: str,
        version_number: int = 0,
        ssl_config: SSLConfig | None = None,
    ) -> None:
        if not isinstance(servable_name, str) or not isinstance(method_name, str):
            raise RuntimeError("servable_name and method_name must be str")
        if not is_int(version_number, 0):
            raise RuntimeError(f"version_number must be an int >= 0; got {version_number!r}")
        self.address = address
        self.servable_name = servable_name
        self.method_name = method_name
        self.version_number = version_number

    def _request_error(self, exc: MindServeError) -> str:
        return request_error(self.servable_name, self.method_name, self.version_number, exc)

    def infer(self, instances: Any) -> Any:
        """Run the method on one instance (a dict) or a list of them."""
        return self._call(instances, wait=True).result()

    def infer_async(self, instances: Any) -> _AsyncResult:
        """Start the call; ``.result()`` waits and returns what :meth:`infer` would."""
        return self._call(instances, wait=False)

    def _call(self, instances: Any, wait: bool) -> _AsyncResult:
        items = _as_instances(instances)
        full = _master_context.enter()
        if full is not None:
            return _AsyncResult(None, {"error": full})
        rt = server.runtime()
        call = rt.infer if wait else rt.infer_async
        try:
            outcome = call(
                self.servable_name,
                self.method_name,
                items,
                version=self.version_number,
                return_exceptions=True,
            )
        except MindServeError as exc:
            _master_context.leave()
            return _AsyncResult(None, {"error": self._request_error(exc)})
        except BaseException:
            _master_context.leave()
            raise
        if isinstance(outcome, Future):  # in flight until it completes
            outcome.add_done_callback(lambda _: _master_context.leave())
        else:
            _master_context.leave()
        return _AsyncResult(outcome, items=items)

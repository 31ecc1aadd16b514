"""MindSpore Serving 2.0's ``mindspore_serving.server``, in-process.

Change only the import (``from mindserve.compat import server``) and keep the calls::

    server.start_servables(server.ServableStartConfig("servables", "add", device_ids=0))
    server.start_grpc_server("127.0.0.1:5500")      # accepted: there is no network layer
    ...
    server.stop()

The servables run in a :class:`mindserve.Runtime` of this process; call them with
:class:`mindserve.compat.client.Client` (or with :func:`runtime` and the native API), or,
with the ``mindserve[http]`` extra installed, over HTTP: ``start_restful_server`` serves
MindSpore Serving's RESTful protocol with uvicorn on a thread of this process.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

from mindserve import ExtraUnavailableError, LoadError, Runtime, VersionNotFoundError
from mindserve._observe.visible import warn_definition
from mindserve._serving.versions import list_versions
from mindserve.compat import _master_context, _network, log
from mindserve.compat._checks import check_int, check_str, int_tuple
from mindserve.compat._loader import load_servable

logger = logging.getLogger("mindserve.compat")

__all__ = [
    "SSLConfig",
    "ServableStartConfig",
    "master",
    "runtime",
    "start_grpc_server",
    "start_restful_server",
    "start_servable_in_master",
    "start_servables",
    "stop",
]

_lock = threading.Lock()
_runtime: Runtime | None = None
#: The RESTful server (a mindserve.http.BackgroundServer) while one runs.
_restful: Any = None
#: The gRPC server's address (host, port; port 0 for a unix socket) once start_grpc_server
#: accepted it: nothing listens there, but the address is held as MindSpore Serving holds it.
_grpc: tuple[str, int] | None = None


class ServableStartConfig:
    """Which servable to start, as in MindSpore Serving, with its parameter checks (each
    bad parameter raises ``RuntimeError`` with MindSpore Serving's wording).

    With at most one device id and ``num_parallel_workers`` of 0 or 1, the servable runs in
    this process. Several ``device_ids`` start one worker process per id; a larger
    ``num_parallel_workers`` (0 to 64) starts that many worker processes, the ids shared out
    among them in turn (as MindSpore Serving raises it to the number of devices when it is
    smaller). See docs/workers.md. ``device_type`` picks the device ("CPU", "Ascend", "GPU",
    or None, also spelled "None" in any case: Ascend when present, else the CPU);
    ``dec_key``/``dec_mode`` decrypt its MindIR files.
    """

    def __init__(
        self,
        servable_directory: str,
        servable_name: str,
        device_ids: int | Sequence[int] | None = None,
        version_number: int = 0,
        device_type: str | None = None,
        num_parallel_workers: int = 0,
        dec_key: bytes | None = None,
        dec_mode: str = "AES-GCM",
    ) -> None:
        if isinstance(servable_directory, os.PathLike):
            servable_directory = os.fspath(servable_directory)
        check_str("servable_directory", servable_directory)
        check_str("servable_name", servable_name)
        check_int("version_number", version_number, 0)
        check_int("num_parallel_workers", num_parallel_workers, 0, 64)
        if dec_key is not None:
            if not isinstance(dec_key, bytes):
                raise RuntimeError(f"Parameter 'dec_key' should be bytes, but actually {type(dec_key)}")
            if not dec_key:
                raise RuntimeError("Parameter 'dec_key' should not be empty bytes")
            if len(dec_key) not in (16, 24, 32):
                raise RuntimeError(f"Parameter 'dec_key' length {len(dec_key)} expected to be 16, 24 or 32")
        check_str("dec_mode", dec_mode)
        if dec_mode not in ("AES-GCM", "AES-CBC"):
            raise RuntimeError("Parameter 'dec_mode' expected to be 'AES-GCM' or 'AES-CBC'")
        ids = int_tuple("device_ids", [] if device_ids is None else device_ids, 0, single=True)
        if device_type is not None:
            check_str("device_type", device_type)
            if device_type.lower() == "none":
                device_type = None
            elif device_type.lower() not in ("ascend", "gpu", "cpu"):
                raise RuntimeError(
                    f"Unsupported device type '{device_type}', only support 'Ascend', 'GPU', 'CPU' and None, "
                    f"case ignored"
                )
        self.servable_directory = os.path.abspath(servable_directory)
        self.servable_name = servable_name
        self.device_ids = ids
        self.version_number = version_number
        self.device_type = device_type
        self.num_parallel_workers = num_parallel_workers
        self.dec_key = dec_key
        self.dec_mode = dec_mode


def runtime() -> Runtime:
    """The runtime the compat server runs servables in (created on first use)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def _start(config: ServableStartConfig, *, replace: bool) -> None:
    """Start a config's version (``replace``: in place of what runs under its name; else
    beside it). A version that does not exist is a ``RuntimeError``, as in MindSpore
    Serving (a :class:`~mindserve.LoadError`)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(device_target=config.device_type)
        rt = _runtime
    device_ids = _worker_devices(config.device_ids, config.num_parallel_workers)
    servable = load_servable(
        config.servable_directory, config.servable_name, dec_key=config.dec_key, dec_mode=config.dec_mode
    )
    try:
        if replace:
            output = None if device_ids is None else _serving_log(_device_count(config.device_ids))
            rt.start(
                servable,
                version=config.version_number,
                device_ids=device_ids,
                worker_output=output,
                replace=True,
            )
        else:
            rt.load(servable, version=config.version_number)
    except VersionNotFoundError as exc:
        raise LoadError(_version_words(config, exc)) from exc
    except LoadError as exc:
        model_file = getattr(exc, "model_file", None) or getattr(exc.__cause__, "model_file", None)
        if model_file is None:
            raise
        raise LoadError(
            f"Load model failed, servable directory: '{config.servable_directory}', servable name: "
            f"'{config.servable_name}', model file: '{os.path.basename(model_file)}', version number "
            f"{config.version_number}, load error details: {exc}"
        ) from exc


def _version_words(config: ServableStartConfig, exc: Exception) -> str:
    """A missing version in MindSpore Serving's words, mindserve's detail after."""
    if not list_versions(os.path.join(config.servable_directory, config.servable_name)):  # "0/" is none
        return (
            f"There is no valid version directory of models while there are models declared in "
            f"servable_config.py, servable directory: {config.servable_directory}, servable name: "
            f"{config.servable_name}. {exc}"
        )
    return (
        f"Start servable failed: There is no specified version directory of models, specified version number: "
        f"{config.version_number}, servable directory: '{config.servable_directory}', servable name: "
        f"'{config.servable_name}'. {exc}"
    )


def _worker_devices(ids: int | Sequence[int] | None, parallel: int) -> list[int] | None:
    """The device id of each worker process, or ``None`` to run in this process."""
    listed = _listed_devices(ids)
    count = max(len(listed), parallel or 0)
    if count <= 1:
        return None
    return [listed[k % len(listed)] for k in range(count)]


def _listed_devices(ids: int | Sequence[int] | None) -> list[int]:
    return [0] if ids is None else [ids] if isinstance(ids, int) else list(ids) or [0]


def _device_count(ids: int | Sequence[int] | None) -> int:
    """How many workers MindSpore Serving starts for listed devices (the others: extra)."""
    return 1 if isinstance(ids, int) else len(ids or ())


def _serving_log(devices: int) -> Callable[..., str]:
    """Where MindSpore Serving writes a worker's output: ``serving_logs/`` in the working
    directory, one file per worker (``device<id>`` for each listed device, ``extra<k>`` for
    the parallel workers beyond them) and version."""
    os.makedirs("serving_logs", exist_ok=True)

    def log_file(*, servable: str, version: int, index: int, device_id: int) -> str:
        worker = f"device{device_id}" if index < devices else f"extra{index - devices}"
        return os.path.join("serving_logs", f"log_{servable}_{worker}_version{version}.log")

    return log_file


def start_servables(servable_configs: ServableStartConfig | Sequence[ServableStartConfig]) -> None:
    """Start one or several servables (``ServableStartConfig``) in this process.

    As in MindSpore Serving, configs of one servable name must share its directory; version
    0 is resolved to the newest version directory first; configs of one version are merged (device ids joined, the most workers kept) and must share
    their decryption key and mode; several versions of one servable run side by side."""
    configs = [servable_configs] if isinstance(servable_configs, ServableStartConfig) else servable_configs
    if not isinstance(configs, (tuple, list)):
        raise RuntimeError(
            f"Parameter '{servable_configs}' should be ServableStartConfig, list or tuple of "
            f"ServableStartConfig, but actually {type(servable_configs)}"
        )
    for config in configs:
        if not isinstance(config, ServableStartConfig):
            raise RuntimeError(
                f"The item of parameter '{servable_configs}' should be ServableStartConfig, but actually "
                f"{type(config)}"
            )
    for group in _merged(configs).values():
        first = True
        for config in group.values():
            _start(config, replace=first)
            first = False


def _merged(configs: Sequence[ServableStartConfig]) -> dict[str, dict[int, ServableStartConfig]]:
    """Configs by servable name, then by version: MindSpore Serving's merge and its checks."""
    groups: dict[str, dict[int, ServableStartConfig]] = {}
    directories: dict[str, str] = {}
    for config in configs:
        name = config.servable_name
        if config.version_number == 0:  # the newest, resolved before merging (as there)
            newest = list_versions(os.path.join(config.servable_directory, name))
            if newest:
                config = _copy(config, version_number=newest[-1])
        known = directories.setdefault(name, config.servable_directory)
        if known != config.servable_directory:
            raise RuntimeError(
                f"The servable directory of servable name {name} is different in multiple configurations, "
                f"servable directory: {config.servable_directory} and {known}"
            )
        versions = groups.setdefault(name, {})
        last = versions.get(config.version_number)
        if last is None:
            versions[config.version_number] = config
            continue
        if last.dec_key != config.dec_key or last.dec_mode != config.dec_mode:
            raise RuntimeError(
                f"The dec key or dec mode of servable name {name} is different in multiple configurations."
            )
        versions[config.version_number] = _copy(
            last,
            device_ids=tuple(dict.fromkeys(last.device_ids + config.device_ids)),
            num_parallel_workers=max(last.num_parallel_workers, config.num_parallel_workers),
        )
    return groups


def _copy(config: ServableStartConfig, **changes: Any) -> ServableStartConfig:
    """A start config with some parameters changed (checked again, as any config is)."""
    parameters: dict[str, Any] = dict(
        servable_directory=config.servable_directory,
        servable_name=config.servable_name,
        device_ids=config.device_ids,
        version_number=config.version_number,
        device_type=config.device_type,
        num_parallel_workers=config.num_parallel_workers,
        dec_key=config.dec_key,
        dec_mode=config.dec_mode,
    )
    parameters.update(changes)
    return ServableStartConfig(**parameters)


def start_servable_in_master(
    servable_directory: str,
    servable_name: str,
    version_number: int = 0,
    device_type: str | None = None,
    device_id: int = 0,
) -> None:
    """MindSpore Serving 1.x's in-master start: same as ``start_servables`` with one config."""
    _start(
        ServableStartConfig(servable_directory, servable_name, device_id, version_number, device_type),
        replace=True,
    )


def _no_network(kind: str, address: str, hint: str = "") -> None:
    warn_definition(
        logger,
        "mindserve has no network layer: %s(%r) starts nothing. Call the servables in this process with "
        "mindserve.compat.client.Client or mindserve.Runtime.infer.%s",
        kind,
        address,
        hint,
    )


def _logged(start: Callable[..., None]) -> Callable[..., None]:
    """A server start whose failure (a ``RuntimeError``) is logged at ERROR on
    :func:`mindserve.compat.log.server_logger` too, as MindSpore Serving logs it."""

    @functools.wraps(start)
    def logged(*args: Any, **kwargs: Any) -> None:
        try:
            start(*args, **kwargs)
        except RuntimeError as exc:
            log.server_logger().error("%s", exc)
            raise

    return logged


@_logged
def start_grpc_server(address: str, max_msg_mb_size: int = 100, ssl_config: Any = None) -> None:
    """Check the parameters and the address as MindSpore Serving does, then start nothing
    (there is no gRPC layer) and say so in the log.

    Bad parameters, an address that cannot be bound (a bad ip, a port in use, the RESTful
    server's port), an ``ssl_config`` whose files cannot be read or whose certificate and
    key do not match, or a second call before :func:`stop` raise ``RuntimeError`` in
    MindSpore Serving's words. Nothing listens on the address afterwards; a RESTful server
    started on its port fails as it would there.
    """
    global _grpc
    tag = "Serving gRPC"
    check_str("address", address)
    check_int("max_msg_mb_size", max_msg_mb_size, 1, 512)
    if ssl_config is not None and not isinstance(ssl_config, SSLConfig):
        raise RuntimeError("The type of ssl_config should be type of SSLConfig")
    with _lock:
        if _grpc is not None:
            raise RuntimeError(f"Serving Error: {tag} server is already running")
        if address.startswith("unix:"):
            if address == "unix:":
                raise RuntimeError("Serving Error: Empty grpc server unix domain socket address")
            held = (address, 0)
        else:
            host, port = _network.socket_address(address, tag)
            held = (host, port)
            if ssl_config is not None:
                _network.grpc_credentials(ssl_config, address)
            if not _network.bindable(host, port):
                raise RuntimeError(
                    f"Serving Error: {tag} server start failed, create server failed, address {address}"
                )
        _grpc = held
    _no_network("start_grpc_server", address)
    log.server_logger().info(
        "Serving gRPC server address %s held; nothing listens there (no gRPC layer)", address
    )


@_logged
def start_restful_server(address: str, max_msg_mb_size: int = 100, ssl_config: Any = None) -> None:
    """Serve the servables of this process over MindSpore Serving's RESTful protocol on
    ``address`` (``"ip:port"``), with uvicorn on a background thread, until :func:`stop`.

    ``max_msg_mb_size`` (1 to 512) bounds a request's body in megabytes; ``ssl_config`` (an
    :class:`SSLConfig`) serves HTTPS. Bad parameters, an address in use or a server already
    running raise ``RuntimeError`` in MindSpore Serving's words. Without the
    ``mindserve[http]`` extra it starts nothing and says so in the log. See docs/http.md.
    """
    global _restful
    check_str("address", address)
    check_int("max_msg_mb_size", max_msg_mb_size, 1, 512)
    if ssl_config is not None and not isinstance(ssl_config, SSLConfig):
        raise RuntimeError("The type of ssl_config should be class of SSLConfig")
    if address.startswith("unix:"):
        raise RuntimeError("Serving Error: RESTful server does not support binding to unix domain socket")
    host, port = _network.socket_address(address)
    try:
        from mindserve.http._app import compat_app, require
        from mindserve.http._protocol import Limits
        from mindserve.http._server import BackgroundServer

        require("starlette")
        require("uvicorn")
    except ExtraUnavailableError as exc:
        _no_network(
            "start_restful_server", address, f" Hint: pip install 'mindserve[http]' ({exc.__cause__})"
        )
        return
    app = compat_app(
        lambda: _runtime,
        _master_context.enter,
        _master_context.leave,
        Limits(max_body_size=max_msg_mb_size * 2**20, strict=True),
    )
    with _lock:
        if _restful is not None:
            raise RuntimeError("Serving Error: RESTful server is already running")
        if _grpc is not None and _grpc[1] == port:  # held by start_grpc_server
            raise RuntimeError(
                f"Serving Error: RESTful server start failed, bind to the socket address {address} failed: "
                f"the gRPC server holds port {port}"
            )
        problem = None if ssl_config is None else _network.certificate_problem(ssl_config)
        if problem is not None:
            raise RuntimeError(f"Serving Error: {problem[0]}: {problem[1]}")
        try:
            _restful = BackgroundServer(app, host=host, port=port, **_network.ssl_options(ssl_config))
        except OSError as exc:
            raise RuntimeError(
                f"Serving Error: RESTful server start failed, bind to the socket address {address} failed: {exc}"
            ) from exc
    log.server_logger().info("Serving RESTful server start success, listening on %s", address)


def stop() -> None:
    """Stop the RESTful server (answering the requests in flight), release the gRPC
    server's address, then stop every servable started here (draining the calls in flight)."""
    global _runtime, _restful, _grpc
    with _lock:
        restful, _restful, _grpc = _restful, None, None
    if restful is not None:
        restful.stop()
    with _lock:
        rt, _runtime = _runtime, None
    if rt is not None:
        rt.close()


class SSLConfig:
    """The RESTful server's certificate, private key (PEM files) and, with
    ``verify_client``, the CA its clients' certificates must be signed by."""

    def __init__(
        self,
        certificate: Any = None,
        private_key: Any = None,
        custom_ca: Any = None,
        verify_client: bool = False,
    ) -> None:
        self.certificate = certificate
        self.private_key = private_key
        self.custom_ca = custom_ca
        self.verify_client = verify_client


#: ``server.master.context.set_max_enqueued_requests``, as in MindSpore Serving.
master = types.ModuleType("mindserve.compat.server.master")
master.context = _master_context  # type: ignore[attr-defined]
sys.modules.setdefault(master.__name__, master)
sys.modules.setdefault(f"{master.__name__}.context", _master_context)

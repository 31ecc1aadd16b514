"""MindSpore Serving 2.0's ``mindspore_serving.server``, in-process.

Change only the import (``from mindserve.compat import server``) and keep the calls::

    server.start_servables(server.ServableStartConfig("servables", "add", device_ids=0))
    server.start_grpc_server("127.0.0.1:5500")      # accepted: there is no network layer
    ...
    server.stop()

The servables run in a :class:`mindserve.Runtime` of this process; call them with
:class:`mindserve.compat.client.Client` (or with :func:`runtime` and the native API).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from mindserve import Runtime
from mindserve.compat._loader import load_servable

logger = logging.getLogger("mindserve.compat")

__all__ = [
    "ServableStartConfig",
    "runtime",
    "start_grpc_server",
    "start_restful_server",
    "start_servable_in_master",
    "start_servables",
    "stop",
]

_lock = threading.Lock()
_runtime: Runtime | None = None


class ServableStartConfig:
    """Which servable to start, as in MindSpore Serving.

    With one device id and ``num_parallel_workers`` of 0 or 1, the servable runs in this
    process. Several ``device_ids`` start one worker process per id; a larger
    ``num_parallel_workers`` starts that many worker processes, the ids shared out among
    them in turn (as MindSpore Serving raises it to the number of devices when it is
    smaller). See docs/workers.md. ``device_type`` picks the device ("CPU", "Ascend", "GPU", or None for Ascend when
    present, else the CPU); ``dec_key``/``dec_mode`` decrypt its MindIR files.
    """

    def __init__(
        self,
        servable_directory: str,
        servable_name: str,
        device_ids: int | Sequence[int] | None = 0,
        version_number: int = 0,
        device_type: str | None = None,
        num_parallel_workers: int = 0,
        dec_key: bytes | None = None,
        dec_mode: str = "AES-GCM",
    ) -> None:
        if not isinstance(servable_directory, (str, os.PathLike)):
            raise RuntimeError(f"servable_directory must be a str; got {type(servable_directory).__name__}")
        if not isinstance(servable_name, str) or not servable_name:
            raise RuntimeError(f"servable_name must be a non-empty str; got {servable_name!r}")
        if isinstance(version_number, bool) or not isinstance(version_number, int) or version_number < 0:
            raise RuntimeError(f"version_number must be an int >= 0; got {version_number!r}")
        self.servable_directory = os.fspath(servable_directory)
        self.servable_name = servable_name
        self.device_ids = device_ids
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


def _start(config: ServableStartConfig) -> None:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(device_target=config.device_type)
        rt = _runtime
    device_ids = _worker_devices(config.device_ids, config.num_parallel_workers)
    servable = load_servable(
        config.servable_directory, config.servable_name, dec_key=config.dec_key, dec_mode=config.dec_mode
    )
    rt.start(servable, version=config.version_number, device_ids=device_ids)


def _worker_devices(ids: int | Sequence[int] | None, parallel: int) -> list[int] | None:
    """The device id of each worker process, or ``None`` to run in this process."""
    listed = [0] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    count = max(len(listed), parallel or 0)
    if count <= 1:
        return None
    return [listed[k % len(listed)] for k in range(count)]


def start_servables(servable_configs: ServableStartConfig | Sequence[ServableStartConfig]) -> None:
    """Start one or several servables (``ServableStartConfig``) in this process."""
    configs = (
        [servable_configs] if isinstance(servable_configs, ServableStartConfig) else list(servable_configs)
    )
    for config in configs:
        if not isinstance(config, ServableStartConfig):
            raise RuntimeError(
                f"servable_configs must be ServableStartConfig objects; got {type(config).__name__}"
            )
        _start(config)


def start_servable_in_master(
    servable_directory: str,
    servable_name: str,
    version_number: int = 0,
    device_type: str | None = None,
    device_id: int = 0,
) -> None:
    """MindSpore Serving 1.x's in-master start: same as ``start_servables`` with one config."""
    _start(ServableStartConfig(servable_directory, servable_name, device_id, version_number, device_type))


def _no_network(kind: str, address: str) -> None:
    logger.warning(
        "mindserve has no network layer: %s(%r) starts nothing. Call the servables in this process with "
        "mindserve.compat.client.Client or mindserve.Runtime.infer.",
        kind,
        address,
    )


def start_grpc_server(address: str, max_msg_mb_size: int = 100, ssl_config: Any = None) -> None:
    """Accepted, starts nothing (there is no network layer), and says so in the log."""
    _no_network("start_grpc_server", address)


def start_restful_server(address: str, max_msg_mb_size: int = 100, ssl_config: Any = None) -> None:
    """Accepted, starts nothing (there is no network layer), and says so in the log."""
    _no_network("start_restful_server", address)


def stop() -> None:
    """Stop every servable started here (draining the calls in flight)."""
    global _runtime
    with _lock:
        rt, _runtime = _runtime, None
    if rt is not None:
        rt.close()

"""The compat servers' addresses and certificates, checked as MindSpore Serving checks
them (its ``RuntimeError`` wording): ``ip:port`` addresses, whether one can be bound, which
of an ``SSLConfig``'s files fails to load, and an ``SSLConfig`` as uvicorn's options."""

from __future__ import annotations

import socket
import ssl
from typing import Any, Protocol


class SSLConfig(Protocol):
    """What these checks read of an ``SSLConfig`` (:class:`mindserve.compat.server.SSLConfig`,
    which imports this module)."""

    certificate: Any
    private_key: Any
    custom_ca: Any
    verify_client: bool


def grpc_credentials(config: SSLConfig, address: str) -> None:
    """Read an ``SSLConfig``'s files as MindSpore Serving does (an ``OSError`` if one is
    missing); a certificate or key that cannot be loaded fails as gRPC fails to create the server."""
    for path in (config.certificate, config.private_key) + (
        (config.custom_ca,) if config.verify_client else ()
    ):
        with open(path, "rb"):
            pass
    problem = certificate_problem(config)
    if problem is not None:
        raise RuntimeError(
            f"Serving Error: Serving gRPC server start failed, create server failed, address {address}: "
            f"{problem[1]}"
        )


def certificate_problem(config: SSLConfig) -> tuple[str, str] | None:
    """Which of an ``SSLConfig``'s files a TLS server fails to load, as MindSpore Serving's
    RESTful server names it (``load <what> from <path> failed``), and why; None if both load.
    As in OpenSSL, a key that does not match the certificate fails as the key."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(config.certificate, config.private_key)
    except (ssl.SSLError, OSError) as exc:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=config.certificate)
        except (ssl.SSLError, OSError):
            return f"load certificate_chain from {config.certificate} failed", str(exc)
        return f"load private_key from {config.private_key} failed", str(exc)
    return None


def bindable(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (as gRPC binds: address reuse on)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return False
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError:
            return False
    return True


def socket_address(address: str, tag: str = "RESTful server") -> tuple[str, int]:
    """``ip:port`` checked as MindSpore Serving checks a server's address (``tag``: the
    server, as its messages name it)."""
    where = f"{tag} address '{address}'"
    position = address.rfind(":")
    if position < 0:
        raise RuntimeError(f"Serving Error: The format of the {where} is illegal")
    if position == 0 or position == len(address) - 1:
        raise RuntimeError(f"Serving Error: Missing ip or port of the {where}")
    host, text = address[:position], address[position + 1 :]
    if not (text.isascii() and text.isdigit()):
        raise RuntimeError(f"Serving Error: The type of {where} port is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise RuntimeError(f"Serving Error: The port of the {where} is out of legal range [1 ~ 65535]")
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address
        host = host[1:-1]
    return host, port


def ssl_options(config: SSLConfig | None) -> dict[str, Any]:
    """An ``SSLConfig`` as uvicorn's options."""
    if config is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": config.certificate, "ssl_keyfile": config.private_key}
    if config.verify_client:
        options.update(ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_ca_certs=config.custom_ca)
    return options

"""The JSON text of requests and replies: orjson when it is installed (the ``mindserve[http]``
extra has it), else the json module held to the same rules.

A body is refused when it is not strict UTF-8 JSON: a byte-order mark, another encoding
(UTF-16, say), a lone surrogate (escaped or encoded), a number beyond the float range
(``1e400``), ``NaN`` or ``Infinity``. orjson refuses all of these; the json module is
made to. Whichever parses, a body gives the same values, except that orjson turns integers
beyond 64 bits into floats: :func:`loads` says whether its integers are exact, and the
protocol reads a body again with the json module when it finds a float of 2**63 or more
in an inexact one. A body holding a backslash-u escape or the key ``"instances"`` more than
once (which orjson would keep the last of) is parsed by the json module, which counts it.

Measured on this shape of request (one instance of 256 float32 numbers as a JSON list, a
10-number reply; parsing, the array and the reply; one process, best of five): the json
module 92 us, orjson 13 us, msgspec 15 us. orjson it is.
"""

from __future__ import annotations

import json
from typing import Any

try:  # the mindserve[http] extra installs it; without it, the json module serves
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]

__all__ = ["JSONRefused", "dumps", "loads"]

INSTANCES = "instances"
_UTF8_BOM = b"\xef\xbb\xbf"


class JSONRefused(ValueError):
    """A body that is not strict UTF-8 JSON; the message says why."""


def loads(body: bytes, *, fast: bool = True) -> tuple[Any, int, bool]:
    """A body's JSON value; how many times its top-level object holds the key
    ``"instances"`` (0 when the value is not an object); and whether its integers are exact
    (``False`` when orjson read it: an integer beyond 64 bits became a float).
    ``fast=False``: the json module."""
    if fast and orjson is not None and not _escapes(body) and body.count(b'"instances"') <= 1:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise JSONRefused(str(exc)) from None
        return message, int(isinstance(message, dict) and INSTANCES in message), False
    return _strict_loads(body)


def _escapes(body: bytes) -> bool:
    """Whether a body may hold a ``\\u`` escape (a backslash first: one byte is found many
    times faster than two)."""
    return b"\\" in body and b"\\u" in body


def _strict_loads(body: bytes) -> tuple[Any, int, bool]:
    if body.startswith(_UTF8_BOM):
        raise JSONRefused("a UTF-8 byte order mark (BOM) is not supported")
    try:
        text = body.decode("utf-8")  # strict: no surrogates, no UTF-16
    except UnicodeDecodeError as exc:
        raise JSONRefused(f"the body is not UTF-8: {exc}") from None
    counts: list[int] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        counts.append(sum(key == INSTANCES for key, _ in items))
        return dict(items)

    try:
        message = json.loads(text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=pairs)
    except RecursionError:
        raise JSONRefused("The JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise JSONRefused(str(exc)) from None
    _check_text(message)
    return message, counts[-1] if isinstance(message, dict) else 0, True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is infinity when parsed as double")
    return number


def _check_text(message: Any) -> None:
    """Refuse a lone surrogate (``"\\ud800"``) in any key or string, as orjson does."""
    stack = [message]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _utf8(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key in item:
                _utf8(key)
            stack.extend(item.values())


def _utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONRefused("a string holds a lone surrogate, which is not Unicode text") from None


def dumps(reply: Any) -> bytes:
    """A reply's JSON text (UTF-8, compact); ``ValueError`` or ``TypeError`` for a value JSON
    cannot hold (a lone surrogate, an integer beyond 64 bits, NaN, a non-str key)."""
    if orjson is not None:
        return orjson.dumps(reply)  # orjson.JSONEncodeError is a TypeError
    text = json.dumps(reply, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")

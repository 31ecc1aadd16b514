"""MindSpore Serving's RESTful protocol, with no web framework: the URL and the request's
JSON (the reply: :mod:`mindserve.http._reply`).

The URL is ``/model/<servable>[/version/<n>]:<method>``; the body is
``{"instances": [{"<input>": value, ...}, ...]}`` (or one instance as an object). A value is

* a JSON scalar: an int becomes an ``int32`` array of shape ``()``, a float a ``float32``
  one, a bool a ``bool`` one, a string a ``str``;
* a nested JSON array of numbers or bools: an array of that shape, ``int32``, ``float32``
  or ``bool`` as its first element says; a one-item array of a string (or of a ``b64``
  object) is that string (or those bytes);
* ``{"b64": "...", "type": "...", "shape": [...]}``: base64 data, as ``bytes`` without
  ``type``, else a ``str`` (``"str"``) or an array of that type and shape (``[]`` or
  missing: a scalar), whose byte size must equal what the type and shape say.

Messages are MindSpore Serving's; where mindserve checks more (limits, ranges), its own
words say what was expected and what arrived.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import attrs
import numpy as np

from mindserve._errors import InvalidArgumentError, is_int
from mindserve.http._json import INSTANCES, JSONRefused, loads

__all__ = ["INSTANCES", "Limits", "Refused", "Target", "parse_body", "parse_target", "short"]

ERROR_MSG = "error_msg"
_OBJECT_KEYS = ("b64", "type", "shape")

#: MindSpore Serving's type names; the first name of a dtype is the one its messages use.
TYPES: dict[str, Any] = {
    "bool": np.dtype(np.bool_),
    "bytes": bytes,
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "fp16": np.dtype(np.float16),
    "fp32": np.dtype(np.float32),
    "fp64": np.dtype(np.float64),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "int8": np.dtype(np.int8),
    "str": str,
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "uint8": np.dtype(np.uint8),
}
_TYPE_NAMES = {kind: name for name, kind in reversed(TYPES.items())}
_INT32 = np.iinfo(np.int32)
_VERSION_LIMIT = 2**32 - 1
#: The most elements a ``b64`` shape may claim, 0-sized dimensions left out (numpy's own limit
#: is 2**63 bytes; a body cannot hold near this many anyway).
_MAX_ELEMENTS = 2**62


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not is_int(value, 1):
        raise InvalidArgumentError(f"{attribute.name} must be an int >= 1; got {value!r}")


@attrs.frozen
class Limits:
    """What one request may hold: its body's bytes, its instances, its arrays' depth."""

    max_body_size: int = attrs.field(default=16 * 2**20, validator=_positive)
    max_instances: int = attrs.field(default=1024, validator=_positive)
    max_depth: int = attrs.field(default=32, validator=_positive)
    #: MindSpore Serving's own strictness where mindserve is lenient (the compat server's):
    #: an integer among floats is refused ("json array, elements type is not equal").
    strict: bool = False


class Refused(Exception):
    """A request answered with an error reply before reaching a servable (internal: it
    never leaves :mod:`mindserve.http`). ``status`` is the HTTP status it would have."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@attrs.frozen
class Target:
    """Where a request goes: ``/model/<servable>[/version/<version>]:<method>``."""

    servable: str
    version: int
    method: str


def parse_target(path: str) -> Target:
    """The servable, version (0: the newest) and method a URL path names:
    ``/model/<servable>[/version/<number>]:<method>``, the two pairs in either order (as
    MindSpore Serving finds each keyword wherever it is)."""
    expected = "/model/<servable>[/version/<number>]:<method>"
    if not path.startswith(("/model/", "/version/")):
        raise Refused(
            f"please check url, the keyword:[model] must contain. Expected {expected}; got {short(path)}", 404
        )
    colon = path.find(":")
    head, method = (path, "") if colon < 0 else (path[:colon], path[colon + 1 :])
    parts = head[1:].split("/")
    if len(parts) % 2 and not parts[-1]:  # a trailing "/"
        parts.pop()
    pairs = dict(zip(parts[::2], parts[1::2]))
    if len(parts) not in (2, 4) or len(pairs) != len(parts) // 2 or not set(pairs) <= {"model", "version"}:
        raise Refused(f"please check url, expected {expected}; got {short(path)}", 404)
    servable = pairs.get("model")
    if not servable:
        raise Refused("please check url, the keyword:[model] must contain.", 404)
    version = 0
    if "version" in pairs:
        number = pairs["version"]
        digits = number[1:] if number[:1] in "+-" else number
        if not (digits.isascii() and digits.isdigit()):
            raise Refused(
                f"please check url, the keyword:[version] value invalid, request version number {short(number)}"
            )
        version = int(number)
        if not 0 <= version < _VERSION_LIMIT:
            raise Refused(
                f"please check url, version number range failed, request version number {short(number)}"
            )
    if not method:
        raise Refused("please check url, the keyword:[service method] must contain.", 404)
    return Target(servable, version, method)


# -- the request -------------------------------------------------------------------------------


def parse_body(body: bytes, limits: Limits, *, fast: bool = True) -> list[dict[str, Any]]:
    """The instances of a request body, their values as the servable receives them
    (``fast=False``: parsed by the json module even when orjson is installed)."""
    if not body:
        raise Refused("http message invalid")
    try:
        message, count, exact = loads(body, fast=fast)
    except JSONRefused as exc:
        raise Refused(f"Illegal JSON format. {exc}") from None
    try:
        try:
            return _instances(message, count, _Reading(limits, _may_hold_bools(body), exact))
        except _ReadAgain:  # a float that may have been an integer beyond 64 bits: read exactly
            message, count, exact = loads(body, fast=False)
            return _instances(message, count, _Reading(limits, _may_hold_bools(body), exact))
    except Refused as exc:
        raise Refused(f"Parser request failed, {exc.message}", exc.status) from None


@attrs.frozen
class _Reading:
    """How a body's values are read: its limits, whether it may hold a bool, and whether
    its integers are exact (``False``: orjson read it, turning integers beyond 64 bits into
    floats; a float that large is then read again by the json module)."""

    limits: Limits
    bools: bool
    exact: bool


class _ReadAgain(Exception):
    """A float of 2**63 or more: the body is read again by the json module."""


#: Floats at least this large may have been integers beyond 64 bits, read inexactly.
_INEXACT = float(2**63)


def _may_hold_bools(body: bytes) -> bool:
    """Whether a body may hold a JSON ``true`` or ``false`` (then numeric arrays are walked
    to refuse a bool among numbers, which numpy would take as 1 or 0)."""
    # (one byte is found many times faster than four: "u" and "l" first, rare in bodies)
    return (b"u" in body or b"l" in body) and (b"true" in body or b"false" in body)


def _instances(message: Any, count: int, reading: _Reading) -> list[dict[str, Any]]:
    limits = reading.limits
    if count != 1:
        raise Refused(f"key 'instances' expects to exist once, but actually {count} times")
    instances = message[INSTANCES]
    if isinstance(instances, dict):
        if not instances:
            raise Refused("json object, value is empty")
        return [_instance(instances, 0, reading)]
    if not isinstance(instances, list):
        raise Refused("instances no key mode is not supported")
    if not instances:
        raise Refused("instances value is array type, but no value")
    if not isinstance(instances[0], dict):
        raise Refused("instances no key mode is not supported")
    if len(instances) > limits.max_instances:
        raise Refused(
            f"the request holds {len(instances)} instances, more than the {limits.max_instances} this "
            f"server takes in one request; send them in several requests",
            413,
        )
    parsed = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise Refused("json array, instance is not object type")
        if not instance:
            raise Refused("json array, instance is object type, but no value")
        parsed.append(_instance(instance, index, reading))
    return parsed


def _instance(instance: dict[str, Any], index: int, reading: _Reading) -> dict[str, Any]:
    values = {}
    for key, value in instance.items():
        if not key:
            raise Refused("string key is empty")
        try:
            values[key] = _value(value, reading)
        except Refused as exc:
            raise Refused(f"{exc.message} (instance {index}, input '{short(key)}')", exc.status) from None
    return values


def _value(value: Any, reading: _Reading) -> Any:
    if isinstance(value, dict):
        return _object(value, reading)
    if isinstance(value, list):
        return _array(value, reading)
    if isinstance(value, float) and not reading.exact and abs(value) >= _INEXACT:
        raise _ReadAgain
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return np.array(value)
    if isinstance(value, int):
        if not _INT32.min <= value <= _INT32.max:
            raise Refused(
                f"json integer {short(value)} is out of the range of int32 that a JSON integer becomes"
            )
        return np.array(value, np.int32)
    if isinstance(value, float):
        with np.errstate(over="ignore"):  # beyond float32: infinity, as in MindSpore Serving
            return np.array(value, np.float32)
    if isinstance(value, str):
        return value
    if value is None:
        raise Refused("json value is null, it is not supported")
    raise Refused("json value type is unregistered")


def _object(value: dict[str, Any], reading: _Reading) -> Any:
    """``{"b64": ..., "type": ..., "shape": ...}`` as bytes, a str or an array."""
    if not value:
        raise Refused("json object, value is empty")
    if len(value) > 3:
        raise Refused(
            "json object, items size is more than 3, only support specified ['b64', 'type', 'shape']"
        )
    for key in value:
        if key not in _OBJECT_KEYS:
            raise Refused(f"json object, key is not ['b64', 'type', 'shape'], fail key:{short(key)}")
    kind: Any = bytes
    if "type" in value:
        name = value["type"]
        if not isinstance(name, str):
            raise Refused("json object, key is 'type', value should be string type")
        if name not in TYPES:
            raise Refused(f"json object, specified type:'{short(name)}' is illegal")
        kind = TYPES[name]
    shape = _object_shape(value.get("shape", []), reading)
    if "b64" not in value:
        raise Refused("json object, 'b64' should be specified only one time")
    count = math.prod(shape)
    if kind in (str, bytes) and count != 1:
        raise Refused(
            "json object, only support scalar when data type is string or bytes, please check 'type' or 'shape'"
        )
    data = value["b64"]
    if not isinstance(data, str):
        raise Refused("get scalar data failed, type is string, but json is not string type")
    if len(data) % 4:
        raise Refused(f"'{short(data)}' is illegal b64 encode string")
    if kind not in (str, bytes):
        size = len(data) // 4 * 3 - (data.endswith("=") + data.endswith("=="))
        if size != count * kind.itemsize:  # checked before decoding: a lying shape costs nothing
            raise Refused(
                f"size is not matched, decode base64 size:{size}; Given info: type:{_TYPE_NAMES[kind]}; "
                f"type size:{kind.itemsize}; element nums:{count}"
            )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"'{short(data)}' is illegal b64 encode string") from None
    if kind is bytes:
        return raw
    if kind is str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Refused(f"json object of type 'str', its b64 data is not UTF-8 text: {exc}") from None
    if kind == np.bool_:
        return (np.frombuffer(raw, np.uint8) != 0).reshape(shape)
    return np.frombuffer(bytearray(raw), kind).reshape(shape)


def _object_shape(shape: Any, reading: _Reading) -> tuple[int, ...]:
    limits = reading.limits
    if not isinstance(shape, list):
        raise Refused("json object, key is 'shape', value should be array type")
    if len(shape) > limits.max_depth:
        raise Refused(
            f"json object, key is 'shape', {len(shape)} dimensions are more than the {limits.max_depth} this "
            f"server takes"
        )
    for position, dim in enumerate(shape):
        if not is_int(dim, 0):
            if not reading.exact and isinstance(dim, float) and dim >= _INEXACT:
                raise _ReadAgain
            raise Refused("json object, key is 'shape', array value should be unsigned integer")
        if dim == 0 and position < len(shape) - 1:
            raise Refused(f"json object, key is 'shape', invalid shape value {_shape_text(shape)}")
    if math.prod(dim for dim in shape if dim) > _MAX_ELEMENTS:
        raise Refused(
            f"json object, key is 'shape', invalid shape value {_shape_text(shape)}: more than 2**62 elements"
        )
    return tuple(shape)


def _shape_text(shape: list[int]) -> str:
    return short(json.dumps(shape, separators=(",", ":")))


#: The numpy kind a nested JSON array's first element gives it.
_KINDS = {bool: "b", int: "i", float: "f"}


def _array(value: list[Any], reading: _Reading) -> Any:
    """A nested JSON array: an array of its first element's kind, or a one-item str/bytes."""
    shape: list[int] = []
    leaf: Any = value
    while isinstance(leaf, list) and leaf:
        if len(shape) == reading.limits.max_depth:
            raise Refused(
                f"json array, nested deeper than the {reading.limits.max_depth} dimensions this server takes"
            )
        shape.append(len(leaf))
        leaf = leaf[0]
    if not shape:
        raise Refused("json array, shape is empty")
    if isinstance(leaf, (dict, str)):
        if math.prod(shape) != 1:
            raise Refused("json array, string or bytes type only support one item")
        if len(shape) != 1:  # (MindSpore Serving's words, their two spaces kept for its clients)
            raise Refused(
                f"Instance tensor check failed: bytes or string type input  shape can only be (1,) or empty, "
                f"but given shape is {shape}"
            )
        if isinstance(leaf, str):
            return leaf
        found = _object(leaf, reading)
        if not isinstance(found, (str, bytes)):
            raise Refused("json array, item is object type, object only support string or bytes type")
        return found
    kind = _KINDS.get(type(leaf))
    if kind is None:
        raise Refused("json array, data type is unknown")
    try:
        array = np.array(value)
    except (ValueError, OverflowError, TypeError):
        array = None
    if array is None or array.shape != tuple(shape) or array.dtype.kind != kind:
        if not reading.exact:  # say what is wrong with the integers as they were written
            raise _ReadAgain
        _check_elements(value, shape, 0, type(leaf), reading.limits.strict)  # MindSpore Serving's words
        if kind == "i":
            raise Refused("json array, an integer is out of the range of int32 that JSON integers become")
        raise Refused("json array, elements type is not equal")
    if kind != "b" and (reading.bools or (reading.limits.strict and kind == "f")):
        # numpy took a bool among the numbers as 1 or 0 (or, strict, an int among floats)
        _check_elements(value, shape, 0, type(leaf), reading.limits.strict)
    if kind == "i":
        if array.size and (array.min() < _INT32.min or array.max() > _INT32.max):
            raise Refused("json array, an integer is out of the range of int32 that JSON integers become")
        return array.astype(np.int32)
    if kind == "f":
        if not reading.exact and array.size and abs(array).max() >= _INEXACT:
            raise _ReadAgain
        with np.errstate(over="ignore"):  # beyond float32: infinity, as in MindSpore Serving
            return array.astype(np.float32)
    return array


def _check_elements(value: Any, shape: list[int], depth: int, leaf: type, strict: bool) -> None:
    """Walk a nested array that numpy refused and say why, as MindSpore Serving does
    (``strict``: an int among floats is refused too, as there)."""
    if not isinstance(value, list):
        raise Refused("invalid json array: json type is not array")
    if len(value) != shape[depth]:
        raise Refused(
            f"invalid json array: json size is {len(value)}, the dim {depth} expected to be {shape[depth]}"
        )
    if depth + 1 < len(shape):
        for item in value:
            _check_elements(item, shape, depth + 1, leaf, strict)
        return
    for item in value:
        if not isinstance(item, (bool, int, float, str)):
            raise Refused("json array, data should be number, bool, string or bytes")
        # ints are accepted among floats unless strict (mindserve is lenient there); nothing else mixes
        if type(item) is not leaf and (strict or not (leaf is float and type(item) is int)):
            raise Refused("json array, elements type is not equal")


def short(value: Any) -> str:
    """A value as text, cut to 60 characters."""
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""mindserve.http against hostile requests (issue 19's attack list), and the fast JSON parser
(orjson, the ``http`` extra's) against the json module it replaced: it refuses all the json
module refused and accepts nothing new, whichever parses a body."""

import base64
import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

pytest.importorskip("starlette", reason="the mindserve[http] extra (starlette) is not installed")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (in the test extra)")

from test_http import TestClient, python_servable

from mindserve.http import RestApp
from mindserve.http import _json as fast_json
from mindserve.http._protocol import Limits, Refused, parse_body


@pytest.fixture
def client(rt):
    rt.start(python_servable())
    return TestClient(RestApp(rt, http_status=True))


def post(client, body, path="/model/py:echo"):
    reply = client.post(path, content=body)
    assert reply.headers["content-type"] == "application/json"
    return reply.status_code, reply.json()


GOOD = b'{"x": 1}'


@pytest.mark.parametrize(
    "instance, words",
    [
        (b'{"x": "\\ud800"}', "Illegal JSON format."),  # a lone surrogate in a value
        (b'{"x": "\xed\xa0\x80"}', "Illegal JSON format."),  # ... encoded in the body
        (b'{"x": {"b64": "", "type": "\\udfff"}}', "Illegal JSON format."),  # in a type
        (b'{"\\ud800": 1}', "Illegal JSON format."),  # in a key
        (
            b'{"x": {"b64": "", "type": "fp32", "shape": [4611686018427387904, 4611686018427387904, 0]}}',
            "Parser request failed, json object, key is 'shape', invalid shape value",
        ),
        (
            b'{"x": {"b64": "", "type": "fp32", "shape": [1000000000000000000000000000000, 0]}}',
            "Parser request failed, json object, key is 'shape', invalid shape value",
        ),
        (b'{"x": [1.5, true]}', "Parser request failed, json array, elements type is not equal"),
        (b'{"x": [[1, 2], [false, 3]]}', "Parser request failed, json array, elements type is not equal"),
        (b'{"x": [0.5, 1e400]}', "Illegal JSON format."),
    ],
)
def test_each_attack_is_a_400_with_mindspore_servings_words(client, instance, words):
    status, reply = post(client, b'{"instances": [' + GOOD + b", " + instance + b"]}")
    assert status == 400, reply
    assert set(reply) == {"error_msg"} and reply["error_msg"].startswith(words), reply


def test_duplicate_instances_keys_are_refused_however_the_key_is_written(client):
    for second in (b'"instances"', b'"\\u0069nstances"'):
        status, reply = post(client, b'{"instances": [{"x": 1}], ' + second + b': [{"x": 2}]}')
        assert status == 400
        assert reply == {
            "error_msg": "Parser request failed, key 'instances' expects to exist once, but actually 2 times"
        }
    # the key inside a string, or in an instance, is no second key
    status, reply = post(client, b'{"instances": [{"x": "\\"instances\\""}]}')
    assert status == 200 and reply["instances"][0]["y"] == '"instances"'


def test_a_long_servable_name_is_shortened_in_the_reply(client):
    name = "n" * 60_000  # (httpx sends no URL over 64 KiB)
    status, reply = post(client, b'{"instances": [{"x": 1}]}', path=f"/model/{name}:echo")
    assert status == 404
    assert "servable is not available" in reply["error_msg"] and len(reply["error_msg"]) < 1000


def test_a_lone_surrogate_in_an_output_or_a_message_fails_only_its_instance(rt):
    import mindserve

    svc = mindserve.Servable("odd")

    @svc.stage
    def odd(x):
        if x == 1:
            return "\ud800"
        if x == 2:
            raise ValueError("bad \udfff")
        return x

    svc.add_method(lambda x: odd(x), name="f", outputs="y")
    rt.start(svc)
    status, reply = post(
        TestClient(RestApp(rt, http_status=True)),
        b'{"instances": [{"x": 0}, {"x": 1}, {"x": 2}]}',
        "/model/odd:f",
    )
    assert status == 200
    kept, surrogate, raised = reply["instances"]
    assert kept == {"y": 0}
    assert surrogate["error_msg"].startswith("Failed to construct the response")
    assert "bad \\udfff" in raised["error_msg"]


# -- the fast parser against the json module -------------------------------------------------------


def old_loads(body):
    """What parse_body read before orjson: the json module, NaN and Infinity refused."""

    def constant(name):
        raise ValueError(name)

    return json.loads(body, parse_constant=constant)


def outcome(parse, body):
    try:
        return ("ok", parse(body))
    except (ValueError, RecursionError, UnicodeDecodeError, Refused) as exc:
        return ("refused", type(exc).__name__)


def same_values(a, b, inexact=False):
    """Whether two readings are the same; ``inexact``: ``a``'s floats may stand for ``b``'s
    integers beyond 64 bits (orjson's reading, which parse_body reads again)."""
    if inexact and isinstance(a, float) and type(b) is int and not -(2**63) <= b < 2**64:
        return a == float(b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=True)
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k], inexact) for k in a)
        )
    if isinstance(a, list):
        return (
            isinstance(b, list) and len(a) == len(b) and all(same_values(x, y, inexact) for x, y in zip(a, b))
        )
    return type(a) is type(b) and a == b


HOSTILE = [
    b"1e400",
    b"-1e400",
    b"[1e-400]",
    b"NaN",
    b"[Infinity]",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"[1, 100000000000000000000000000000000000000000]",
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"\\ud83d\\ude00"',
    b'"\xed\xa0\x80"',
    b"\xef\xbb\xbf{}",
    '{"instances": 1}'.encode("utf-16"),
    '{"instances": 1}'.encode("utf-16-le"),
    '{"instances": 1}'.encode("utf-32"),
    b'{"a": 1, "a": 2}',
    b'{"instances": 1, "instances": 2}',
    b"[" * 2000 + b"]" * 2000,
    b'"\x00"',
    b'"\\u0000"',
    b"\x0c[]",
    b"[1,]",
    b"{,}",
    b"01",
    b"-",
    b"1.",
    b".5",
    b"+1",
    b"0x10",
    b"[true, false, null]",
    b"tru",
    b"  {}  ",
    b"{} {}",
    b"\xff",
    b'"\xc3"',
    b'"\xf4\x90\x80\x80"',
]

json_text = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
).map(lambda v: json.dumps(v, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass"))
hostile_bytes = st.builds(
    lambda text, at, junk: text[:at] + junk + text[at:],
    json_text,
    st.integers(0, 200),
    st.sampled_from(
        [b"", b"\\ud800", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"1e400", b"9" * 25, b"\x00", b'"', b","]
    ),
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(json_text, hostile_bytes, st.binary(max_size=40), st.sampled_from(HOSTILE)))
@example(b"1" + b"0" * 400)
def test_the_fast_parser_accepts_nothing_the_json_module_refused_and_reads_the_same(body):
    """orjson's reading, and the json module's held to its rules, against the json module
    as mindserve used it before: nothing newly accepted, the same values."""
    new = outcome(lambda b: fast_json.loads(b)[0], body)
    strict = outcome(lambda b: fast_json.loads(b, fast=False)[0], body)
    old = outcome(old_loads, body)
    # (orjson refuses more: an integer beyond the float range; parse_body refuses it either way)
    if new[0] == "ok":
        assert old[0] == "ok", (body, new)
        assert same_values(new[1], old[1], inexact=True) and same_values(strict[1], old[1])


protocol_values = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.sampled_from(["s", "AAAA", "fp32", "\ud800"]),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3)
        | st.fixed_dictionaries(
            {"b64": st.sampled_from(["", "AAAA", "AACAPw==", "\ud800"])},
            optional={
                "type": st.sampled_from(["fp32", "str", "bytes", "int8"]),
                "shape": st.lists(st.sampled_from([0, 1, 4, 2**62, 10**30]), max_size=3),
            },
        )
    ),
    max_leaves=12,
)
bodies = st.builds(
    lambda instances, duplicate: (
        json.dumps({"instances": instances}, ensure_ascii=duplicate).encode("utf-8", "surrogatepass")
        if not duplicate
        else b'{"instances": [{"x": 1}], ' + json.dumps({"instances": instances})[1:].encode()
    ),
    st.lists(st.dictionaries(st.sampled_from(["x", "y", "\ud800"]), protocol_values, min_size=1), min_size=1),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(bodies, st.sampled_from(HOSTILE)))
def test_requests_are_read_alike_by_orjson_and_by_the_json_module(body):
    limits = Limits(max_depth=4)
    fast = outcome(lambda b: parse_body(b, limits), body)
    slow = outcome(lambda b: parse_body(b, limits, fast=False), body)
    assert fast[0] == slow[0], (body, fast, slow)
    if fast[0] == "ok":
        assert same_values(fast[1], slow[1])


def test_orjson_is_what_parses_when_installed():
    pytest.importorskip("orjson", reason="the http extra's orjson is not installed")
    assert fast_json.orjson is not None
    assert fast_json.loads(b'{"instances": [{"x": [1.5, 2.5]}]}')[1:] == (1, False)
    # an integer beyond 64 bits: a float in orjson's reading, refused as in the json module's
    for body in (
        b'{"instances": {"x": 18446744073709551616}}',
        b'{"instances": {"x": [18446744073709551616, 1.5]}}',
    ):
        assert outcome(lambda b: parse_body(b, Limits()), body)[0] == "refused"
    b64 = base64.b64encode(np.ones(2, np.float32).tobytes()).decode()
    (instance,) = parse_body(
        json.dumps({"instances": {"x": {"b64": b64, "type": "fp32", "shape": [2]}}}).encode(), Limits()
    )
    assert instance["x"].tolist() == [1.0, 1.0]


def test_without_orjson_the_json_module_serves_the_same_replies(client, monkeypatch):
    body = b'{"instances": [{"x": [1.5, 2]}, {"x": "\\u00e9"}, {"x": {"b64": "AAE=", "type": "int8", "shape": [2]}}]}'
    with_orjson = post(client, body)
    monkeypatch.setattr(fast_json, "orjson", None)
    assert post(client, body) == with_orjson
    assert with_orjson[1]["instances"][1] == {"kind": "str", "y": "é"}
    assert post(client, b'{"instances": [{"x": 1}], "instances": []}')[0] == 400

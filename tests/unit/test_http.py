"""mindserve.http: MindSpore Serving's RESTful protocol as an ASGI app, through Starlette's test
client, with Python stages (a real uvicorn on 127.0.0.1, a real MindIR model and an unchanged
MindSpore Serving servable: tests/integration/test_http_server.py)."""

import asyncio
import base64
import json
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("starlette", reason="the mindserve[http] extra (starlette) is not installed")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (in the test extra)")

import mindserve
from mindserve import ExtraUnavailableError
from mindserve.http import RestApp
from mindserve.http._protocol import Limits, Refused, parse_body

with warnings.catch_warnings():  # Starlette announces a successor to httpx for its test client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def python_servable() -> mindserve.Servable:
    """Python stages only: ``echo`` returns its input and says what arrived; ``check``
    fails the instances whose x is negative."""
    svc = mindserve.Servable("py")

    @svc.stage(outputs=2)
    def look(x):
        if isinstance(x, np.ndarray):
            return f"{x.dtype} {x.shape}", x
        return type(x).__name__, x

    @svc.stage
    def positive(x):
        if x < 0:
            raise ValueError(f"x must be >= 0, got {float(x)}")
        return x * 2

    @svc.method(outputs=["kind", "y"])
    def echo(x):
        kind, y = look(x)
        return kind, y

    @svc.method(outputs=["y"])
    def check(x):
        return positive(x)

    return svc


@pytest.fixture
def py_runtime(rt):
    rt.start(python_servable())
    return rt


@pytest.fixture
def client(py_runtime):
    return TestClient(RestApp(py_runtime))


def post(client, body, path="/model/py:echo"):
    """POST a body (a JSON-able object, or bytes as they are); the reply's JSON."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = client.post(path, content=content)
    assert reply.headers["content-type"] == "application/json"
    return reply.json()


def echo(client, value):
    reply = post(client, {"instances": [{"x": value}]})
    assert "instances" in reply, reply
    (instance,) = reply["instances"]
    return instance["kind"], instance["y"]


# -- every value type of the protocol ------------------------------------------------------------

NUMERIC = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
NUMERIC += ["fp16", "fp32", "fp64", "float16", "float32", "float64"]


@pytest.mark.parametrize(
    "value, kind, reply",
    [
        (7, "int32 ()", 7),
        (-2.5, "float32 ()", -2.5),
        (1e300, "float32 ()", None),  # beyond float32: infinity (null in the reply), no warning
        ([1e300, 1.0], "float32 (2,)", [None, 1.0]),
        (True, "bool ()", True),
        ("text", "str", "text"),
        ([[1, 2, 3], [4, 5, 6]], "int32 (2, 3)", [[1, 2, 3], [4, 5, 6]]),
        ([[1.5], [2.5]], "float32 (2, 1)", [[1.5], [2.5]]),
        ([1.5, 2], "float32 (2,)", [1.5, 2.0]),  # ints among floats: accepted (see docs/http.md)
        ([True, False], "bool (2,)", [True, False]),
        (["one"], "str", "one"),
        ({"b64": b64(b"\x00\x01\xff")}, "bytes", {"b64": b64(b"\x00\x01\xff")}),
        ([{"b64": b64(b"raw")}], "bytes", {"b64": b64(b"raw")}),
        ({"b64": b64("héllo".encode()), "type": "str"}, "str", "héllo"),
        ({"b64": b64(np.int64(-5).tobytes()), "type": "int64"}, "int64 ()", -5),
        ({"b64": b64(np.int64(-5).tobytes()), "type": "int64", "shape": []}, "int64 ()", -5),
        ({"b64": b64(bytes([1, 0, 2])), "type": "bool", "shape": [3]}, "bool (3,)", [True, False, True]),
        ({"b64": "", "type": "float32", "shape": [0]}, "float32 (0,)", []),
        ({"b64": "", "type": "float32", "shape": [2, 0]}, "float32 (2, 0)", [[], []]),
    ],
)
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_every_value_type_arrives_as_mindspore_serving_builds_it_and_comes_back(client, value, kind, reply):
    assert echo(client, value) == (kind, reply)


@pytest.mark.parametrize("name", NUMERIC)
def test_b64_arrays_of_every_numeric_type_with_their_shape(client, name):
    dtype = {"fp16": "float16", "fp32": "float32", "fp64": "float64"}.get(name, name)
    array = (np.arange(6) * 3).astype(dtype).reshape(2, 3)
    kind, y = echo(client, {"b64": b64(array.tobytes()), "type": name, "shape": [2, 3]})
    assert kind == f"{dtype} (2, 3)"
    assert y == array.tolist()


def test_one_instance_as_an_object_and_several_instances_in_order(client):
    assert post(client, {"instances": {"x": 3}}) == {"instances": [{"kind": "int32 ()", "y": 3}]}
    many = post(client, {"instances": [{"x": i} for i in range(5)]})
    assert [r["y"] for r in many["instances"]] == [0, 1, 2, 3, 4]


def test_non_finite_floats_come_back_as_null_and_versions_in_the_url(client):
    data = np.array([1.0, np.inf, np.nan], np.float32)
    _, y = echo(client, {"b64": b64(data.tobytes()), "type": "fp32", "shape": [3]})
    assert y == [1.0, None, None]
    reply = post(client, {"instances": [{"x": 1}]}, path="/model/py/version/1:echo")
    assert reply["instances"][0]["y"] == 1
    latest = post(client, {"instances": [{"x": 1}]}, path="/model/py/version/0:echo")
    assert latest == reply


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "http message invalid"),
        (b"{bad", "Illegal JSON format."),
        (b'{"instances": [{"x": NaN}]}', "Illegal JSON format."),
        (b"\xff\xfe\x00", "Illegal JSON format."),
        (b"[" * 100000 + b"]" * 100000, "Illegal JSON format."),
        ([1, 2], "key 'instances' expects to exist once, but actually 0 times"),
        ({"instance": []}, "key 'instances' expects to exist once, but actually 0 times"),
        ({"instances": []}, "instances value is array type, but no value"),
        ({"instances": 1}, "instances no key mode is not supported"),
        ({"instances": [1, 2]}, "instances no key mode is not supported"),
        ({"instances": {}}, "json object, value is empty"),
        ({"instances": [{"x": 1}, 2]}, "json array, instance is not object type"),
        ({"instances": [{"x": 1}, {}]}, "json array, instance is object type, but no value"),
        ({"instances": [{"": 1}]}, "string key is empty"),
        ({"instances": [{"x": None}]}, "json value is null, it is not supported"),
        ({"instances": [{"x": 2**31}]}, "out of the range of int32"),
        ({"instances": [{"x": []}]}, "json array, shape is empty"),
        ({"instances": [{"x": [[]]}]}, "json array, data type is unknown"),
        (
            {"instances": [{"x": [[1, 2], [3]]}]},
            "invalid json array: json size is 1, the dim 1 expected to be 2",
        ),
        ({"instances": [{"x": [[1, 2], 3]}]}, "invalid json array: json type is not array"),
        ({"instances": [{"x": [1, {"a": 1}]}]}, "json array, data should be number, bool, string or bytes"),
        ({"instances": [{"x": [1, 2.5]}]}, "json array, elements type is not equal"),
        ({"instances": [{"x": [True, 1]}]}, "json array, elements type is not equal"),
        ({"instances": [{"x": [1, "a"]}]}, "json array, elements type is not equal"),
        ({"instances": [{"x": [1, 2**40]}]}, "out of the range of int32"),
        ({"instances": [{"x": ["a", "b"]}]}, "json array, string or bytes type only support one item"),
        ({"instances": [{"x": [["a"]]}]}, "shape can only be (1,) or empty, but given shape is [1, 1]"),
        ({"instances": [{"x": {}}]}, "json object, value is empty"),
        (
            {"instances": [{"x": {"b64": "", "type": "str", "shape": [1], "k": 1}}]},
            "items size is more than 3",
        ),
        (
            {"instances": [{"x": {"b64": "", "kind": "str"}}]},
            "key is not ['b64', 'type', 'shape'], fail key:kind",
        ),
        ({"instances": [{"x": {"type": "str"}}]}, "'b64' should be specified only one time"),
        (
            {"instances": [{"x": {"b64": "", "type": 3}}]},
            "json object, key is 'type', value should be string type",
        ),
        (
            {"instances": [{"x": {"b64": "", "type": "dtype_unknow"}}]},
            "specified type:'dtype_unknow' is illegal",
        ),
        ({"instances": [{"x": {"b64": "", "type": ""}}]}, "json object, specified type:'' is illegal"),
        ({"instances": [{"x": {"b64": "", "shape": 3}}]}, "key is 'shape', value should be array type"),
        ({"instances": [{"x": {"b64": "", "shape": [-1]}}]}, "array value should be unsigned integer"),
        ({"instances": [{"x": {"b64": "", "shape": [1.5]}}]}, "array value should be unsigned integer"),
        ({"instances": [{"x": {"b64": "", "shape": [True]}}]}, "array value should be unsigned integer"),
        ({"instances": [{"x": {"b64": "", "type": "fp32", "shape": [0, 2]}}]}, "invalid shape value [0,2]"),
        (
            {"instances": [{"x": {"b64": "", "type": "str", "shape": [2]}}]},
            "only support scalar when data type is",
        ),
        ({"instances": [{"x": {"b64": 12}}]}, "type is string, but json is not string type"),
        ({"instances": [{"x": {"b64": "abc"}}]}, "'abc' is illegal b64 encode string"),
        ({"instances": [{"x": {"b64": "ab!="}}]}, "'ab!=' is illegal b64 encode string"),
        ({"instances": [{"x": {"b64": b64(b"\xff"), "type": "str"}}]}, "its b64 data is not UTF-8 text"),
        (
            {"instances": [{"x": {"b64": "", "type": "fp16"}}]},
            "decode base64 size:0; Given info: type:float16; type size:2; element nums:1",
        ),
        (
            # a shape that would need 2**64 bytes: refused from the b64 length, nothing allocated
            {"instances": [{"x": {"b64": b64(b"1234"), "type": "fp32", "shape": [2**31, 2**31]}}]},
            "Parser request failed, size is not matched, decode base64 size:4; Given info: type:float32",
        ),
    ],
)
def test_bad_requests_get_mindspore_servings_error_reply(client, body, message):
    reply = post(client, body)
    assert set(reply) == {"error_msg"}, reply
    assert message in reply["error_msg"]


def test_content_errors_say_which_instance_and_input(client):
    reply = post(client, {"instances": [{"x": 1}, {"x": [1, 2.5]}]})
    assert reply["error_msg"] == (
        "Parser request failed, json array, elements type is not equal (instance 1, input 'x')"
    )


@pytest.mark.parametrize(
    "path, message",
    [
        ("/models/py:echo", "please check url, the keyword:[model] must contain."),
        ("/model/:echo", "please check url, the keyword:[model] must contain."),
        ("/model/py", "please check url, the keyword:[service method] must contain."),
        ("/model/py:", "please check url, the keyword:[service method] must contain."),
        ("/model/py/version/x1:echo", "the keyword:[version] value invalid, request version number x1"),
        ("/model/py/version/-1:echo", "version number range failed, request version number -1"),
        ("/model/py/version/+x:echo", "the keyword:[version] value invalid, request version number +x"),
        ("/version/1/model/py/version/2:echo", "please check url, expected /model/<servable>"),
        ("/version/1:echo", "please check url, the keyword:[model] must contain."),
        (
            "/model/py/version/4294967295:echo",
            "version number range failed, request version number 4294967295",
        ),
        (
            "/model/py/versions/1:echo",
            "please check url, expected /model/<servable>[/version/<number>]:<method>",
        ),
        ("/model/nope:echo", "Request servable(nope) method(echo) , servable is not available."),
        (
            "/model/py/version/2:echo",
            "Request servable(py) method(echo)  version(2) , servable is not available.",
        ),
        ("/model/py:nope", "Request servable(py) method(nope) , method is not available."),
    ],
)
def test_url_errors_get_mindspore_servings_error_reply(client, path, message):
    reply = post(client, {"instances": [{"x": 1}]}, path=path)
    assert set(reply) == {"error_msg"} and message in reply["error_msg"], reply


@pytest.mark.parametrize("path", ["/model/py/version/1:echo", "/version/1/model/py:echo", "/model/py/:echo"])
def test_the_url_forms_mindspore_serving_accepts_are_accepted(path):
    from mindserve.http._protocol import Target, parse_target

    assert parse_target(path) == Target("py", 1 if "version" in path else 0, "echo")


@pytest.mark.parametrize(
    "value, strict, message",
    [
        ([[1.5, 2.5], [1, 1]], True, "json array, elements type is not equal"),
        ([1.5, 1], True, "json array, elements type is not equal"),
        ([1.5, 1], False, None),  # mindserve's own server is lenient there (docs/http.md)
        ([1.5, 2.5], True, None),
        ([[1, 2], [3, 4]], True, None),
    ],
)
def test_the_compat_servers_strict_reading_refuses_an_int_among_floats(value, strict, message):
    body = json.dumps({"instances": [{"x": value}]}).encode()
    if message is None:
        (instance,) = parse_body(body, Limits(strict=strict))
        assert instance["x"].tolist() == value
        return
    with pytest.raises(Refused, match=message):
        parse_body(body, Limits(strict=strict))


def test_only_post_is_answered(client):
    reply = client.get("/model/py:echo")
    assert reply.status_code == 200 and reply.json() == {
        "error_msg": "http message only support POST right now"
    }


def test_failed_instances_get_their_own_error_and_the_others_their_results(client):
    reply = post(client, {"instances": [{"x": 1.0}, {"x": -1.0}, {"x": 2.0}]}, path="/model/py:check")
    first, failed, last = reply["instances"]
    assert first == {"y": 2.0} and last == {"y": 4.0}
    assert set(failed) == {"error_msg"} and "x must be >= 0, got -1.0" in failed["error_msg"]
    # An unknown input fails its instance too.
    mixed = post(client, {"instances": [{"x": 1.0}, {"z": 1.0}]}, path="/model/py:check")
    assert mixed["instances"][0] == {"y": 2.0} and "unknown input 'z'" in mixed["instances"][1]["error_msg"]


def test_when_every_instance_fails_the_same_way_the_reply_is_one_error(client):
    reply = post(client, {"instances": [{"x": -1.0}, {"x": -1.0}]}, path="/model/py:check")
    assert set(reply) == {"error_msg"} and "x must be >= 0, got -1.0" in reply["error_msg"]


def test_an_output_json_cannot_hold_fails_its_instance(rt):
    svc = mindserve.Servable("odd")

    @svc.stage
    def odd(x):
        return {"a set": {1, 2}} if x > 0 else x

    svc.add_method(lambda x: odd(x), name="f", outputs="y")
    rt.start(svc)
    reply = post(TestClient(RestApp(rt)), {"instances": [{"x": 0}, {"x": 1}]}, path="/model/odd:f")
    assert reply["instances"][0] == {"y": 0}
    assert reply["instances"][1]["error_msg"] == (
        "Failed to construct the response: output 'y': a builtins.set, which JSON cannot hold; return "
        "numbers, str, bytes, lists, tuples, dicts with str keys or numpy arrays"
    )


# -- limits --------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_whether_declared_or_streamed(py_runtime):
    client = TestClient(RestApp(py_runtime, max_body_size=1000))
    body = json.dumps({"instances": [{"x": "a" * 900}]}).encode()
    padded = body + b" " * (1000 - len(body))
    assert post(client, padded)["instances"][0]["y"] == "a" * 900  # exactly the limit: served
    too_big = {"error_msg": "http message is bigger than 1000"}
    assert post(client, padded + b" ") == too_big
    chunks = (padded[i : i + 100] for i in range(0, len(padded), 100))
    streamed = client.post("/model/py:echo", content=(c for c in [*chunks, b" "]))  # chunked: no length
    assert streamed.json() == too_big


def test_a_body_that_never_ends_is_not_read_beyond_the_limit_and_a_drain_allowance(py_runtime):
    """Past max_body_size nothing is kept, and past 64 MiB more nothing is read: the reply
    goes out while the client is still sending."""
    app = RestApp(py_runtime, max_body_size=1000)
    received = []
    sent = []
    chunk = b" " * 2**20

    async def receive():
        received.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/model/py:echo", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    assert json.loads(sent[1]["body"]) == {"error_msg": "http message is bigger than 1000"}
    assert sum(received) <= 1000 + 65 * 2**20


def _speak(app, messages):
    """The messages an app sends back for a request whose body arrives as ``messages``."""
    queue = list(messages)
    sent = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/model/py:echo", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_body_in_several_messages_is_joined_and_a_client_gone_gets_no_reply(py_runtime):
    app = RestApp(py_runtime)
    body = json.dumps({"instances": [{"x": "ab"}]}).encode()
    parts = [{"type": "http.request", "body": body[:7], "more_body": True}]
    parts += [{"type": "http.request", "body": body[7:], "more_body": False}]
    start, reply = _speak(app, parts)
    assert start["status"] == 200
    assert dict(start["headers"]) == {
        b"content-length": str(len(reply["body"])).encode(),
        b"content-type": b"application/json",
    }
    assert json.loads(reply["body"]) == {"instances": [{"kind": "str", "y": "ab"}]}
    assert _speak(app, [{"type": "http.disconnect"}]) == []  # gone before its body
    assert _speak(app, parts[:1]) == []  # gone in the middle of it


def test_instance_count_and_depth_limits(py_runtime):
    client = TestClient(RestApp(py_runtime, max_instances=2, max_depth=3))
    assert len(post(client, {"instances": [{"x": 1}, {"x": 2}]})["instances"]) == 2
    three = post(client, {"instances": [{"x": 1}] * 3})["error_msg"]
    assert "the request holds 3 instances, more than the 2 this server takes in one request" in three
    assert echo(client, [[[1]]]) == ("int32 (1, 1, 1)", [[[1]]])
    deep = post(client, {"instances": [{"x": [[[[1]]]]}]})["error_msg"]
    assert "nested deeper than the 3 dimensions this server takes" in deep
    shape = post(client, {"instances": [{"x": {"b64": "", "type": "fp32", "shape": [1, 1, 1, 0]}}]})
    assert "4 dimensions are more than the 3 this server takes" in shape["error_msg"]


def test_limits_and_arguments_are_checked(py_runtime):
    with pytest.raises(mindserve.InvalidArgumentError, match="max_body_size must be an int >= 1; got 0"):
        RestApp(py_runtime, max_body_size=0)
    with pytest.raises(mindserve.ArgumentTypeError, match=r"runtime must be a mindserve\.Runtime; got str"):
        RestApp("rt")


def test_http_statuses_on_request(py_runtime):
    client = TestClient(RestApp(py_runtime, max_body_size=100, http_status=True))
    assert client.get("/model/py:echo").status_code == 405
    assert client.post("/model/py:echo", content=b"{").status_code == 400
    assert client.post("/model/py:nope", content=b'{"instances": {"x": 1}}').status_code == 404
    assert client.post("/model/nope:echo", content=b'{"instances": {"x": 1}}').status_code == 404
    assert client.post("/model/py:echo", content=b" " * 101).status_code == 413
    assert client.post("/model/py:check", content=b'{"instances": {"x": -1.0}}').status_code == 500
    partial = client.post("/model/py:check", content=b'{"instances": [{"x": -1.0}, {"x": 1.0}]}')
    assert partial.status_code == 200 and partial.json()["instances"][1] == {"y": 2.0}
    bad_input = client.post("/model/py:check", content=b'{"instances": {"z": 1.0}}')
    assert bad_input.status_code == 400


def test_mounted_in_a_starlette_app_below_a_prefix(py_runtime):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    web = Starlette(
        routes=[
            Route("/health", lambda request: PlainTextResponse("ok")),
            Mount("/serving", app=RestApp(py_runtime)),
        ]
    )
    with TestClient(web) as client:  # (runs the lifespan too)
        assert client.get("/health").text == "ok"
        assert echo_at(client, "/serving/model/py:echo", 5) == ("int32 ()", 5)


def echo_at(client, path, value):
    instance = post(client, {"instances": [{"x": value}]}, path=path)["instances"][0]
    return instance["kind"], instance["y"]


def test_without_starlette_making_an_app_says_how_to_install_it(py_runtime, monkeypatch):
    monkeypatch.setitem(sys.modules, "starlette.requests", None)
    with pytest.raises(ExtraUnavailableError, match=r"pip install 'mindserve\[http\]'"):
        RestApp(py_runtime)


# -- hostile bodies ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["b64", "type", "shape", "fp16", "str", "bytes", "AAAA", "AA==", "int8"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["b64", "type", "shape", "x", ""]) | st.text(max_size=4), inner, max_size=4
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, st.dictionaries(st.just("instances"), json_values)))
def test_any_json_body_is_parsed_or_refused_with_a_message(body):
    """Whatever JSON arrives, parsing returns instances of protocol values or a Refused
    with a message: never another exception."""
    try:
        instances = parse_body(json.dumps(body).encode(), Limits(max_depth=4))
    except Refused as exc:
        assert exc.message
        return
    assert instances and all(isinstance(i, dict) and i for i in instances)
    for instance in instances:
        for value in instance.values():
            assert isinstance(value, (str, bytes, np.ndarray)), value
            if isinstance(value, np.ndarray):
                assert value.dtype.kind in "biuf" and value.ndim <= 4


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_as_a_body_are_parsed_or_refused(body):
    try:
        parse_body(body, Limits())
    except Refused as exc:
        assert exc.message


def test_rest_app_runs_per_instance_stages_off_its_event_loop():
    """Ten requests through a per-instance stage that only the server's own event loop can
    release: run on the loop, the stages would block it and never be released."""
    import threading

    import httpx

    release, threads = threading.Event(), []
    svc = mindserve.Servable("dec")
    m = svc.model(lambda x: x * 10, name="times_ten")

    @svc.stage
    def decode(x):
        threads.append(threading.get_ident())
        if not release.wait(10):
            raise RuntimeError("the stage was never released")
        return x

    svc.add_method(lambda x: m(decode(x)), name="f", outputs="y")

    async def main():
        transport = httpx.ASGITransport(app=RestApp(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            sent = [
                asyncio.ensure_future(client.post("/model/dec:f", json={"instances": [{"x": float(k)}]}))
                for k in range(10)
            ]
            while not threads:
                await asyncio.sleep(0.001)
            release.set()  # only this loop, the app's, sets it
            replies = await asyncio.gather(*sent)
        return threading.get_ident(), [r.json() for r in replies]

    with mindserve.Runtime() as rt:
        rt.start(svc)
        loop_thread, replies = asyncio.run(main())
    assert replies == [{"instances": [{"y": 10.0 * k}]} for k in range(10)]
    assert loop_thread not in threads

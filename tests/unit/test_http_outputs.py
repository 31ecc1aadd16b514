"""mindserve.http: what RestApp sends (any JSON-able output; MindSpore Serving's stricter rule
for compat servables) and the statuses it answers with (``http_status=True``)."""

import base64
import json

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the mindserve[http] extra (starlette) is not installed")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (in the test extra)")

from test_http import TestClient, python_servable

import mindserve
from mindserve.http import RestApp
from mindserve.http._app import compat_app
from mindserve.http._protocol import Limits

OUTPUTS = {
    "list": ([1, 2.5, "a"], [1, 2.5, "a"]),
    "tuple": ((1, (2, 3)), [1, [2, 3]]),
    "dict": (
        {"label": "cat", "score": np.float32(0.5), "top": [np.int64(3)]},
        {"label": "cat", "score": 0.5, "top": [3]},
    ),
    "str array": (np.array(["cat", "dog"]), ["cat", "dog"]),
    "bytes array": (np.array([b"\x00a", b"ab"]), [{"b64": "AGE="}, {"b64": "YWI="}]),
    "object array": (np.array([1, "two", None], dtype=object), [1, "two", None]),
    "numpy scalars": ([np.float16(1.5), np.bool_(True), np.uint64(2**64 - 1)], [1.5, True, 2**64 - 1]),
    "non-finite": ([float("nan"), np.float32("inf"), np.array([1.0, np.nan])], [None, None, [1.0, None]]),
    "str": ("héllo", "héllo"),
    "bytes": (b"\xff\x00", {"b64": base64.b64encode(b"\xff\x00").decode()}),
    "None in a list": ([None], [None]),
    "array": (np.arange(4, dtype=np.int8).reshape(2, 2), [[0, 1], [2, 3]]),
}
UNSENDABLE = {
    "set": ({1}, "a builtins.set, which JSON cannot hold"),
    "int key": ({1: "a"}, "a dict with a int key; JSON keys are str"),
    "big int": ([2**64], "the integer 18446744073709551616 is beyond 64 bits"),
    "complex array": (np.ones(2, np.complex64), "a numpy array of dtype complex64, which JSON cannot hold"),
    "object in an array": (np.array([object()]), "a builtins.object, which JSON cannot hold"),
}


def served(rt, outputs):
    """A RestApp over servable ``out``, whose method ``f`` returns ``outputs[i]``."""
    svc = mindserve.Servable("out")

    @svc.stage
    def pick(i):
        return outputs[int(i)]

    svc.add_method(lambda i: pick(i), name="f", outputs="y")
    rt.start(svc)
    return TestClient(RestApp(rt))


def test_restapp_sends_any_json_able_output(rt):
    values = list(OUTPUTS.values())
    client = served(rt, [v for v, _ in values])
    body = json.dumps({"instances": [{"i": i} for i in range(len(values))]})
    reply = client.post("/model/out:f", content=body).json()
    for (name, (_, expected)), instance in zip(OUTPUTS.items(), reply["instances"]):
        assert instance == {"y": expected}, name


def test_an_output_json_cannot_hold_fails_only_its_instance_saying_what_it_was(rt):
    values = [1, *(v for v, _ in UNSENDABLE.values())]
    client = served(rt, values)
    body = json.dumps({"instances": [{"i": i} for i in range(len(values))]})
    kept, *failed = client.post("/model/out:f", content=body).json()["instances"]
    assert kept == {"y": 1}
    for (name, (_, words)), instance in zip(UNSENDABLE.items(), failed):
        assert instance["error_msg"].startswith("Failed to construct the response: output 'y': "), name
        assert words in instance["error_msg"], name


def test_compat_servables_keep_mindspore_servings_rule(rt):
    served(rt, [[1, 2], np.array(["a"])])
    client = TestClient(compat_app(lambda: rt, lambda: None, lambda: None, Limits()))
    reply = client.post("/model/out:f", content=b'{"instances": [{"i": 0}, {"i": 1}]}').json()
    for instance in reply["instances"]:
        assert instance["error_msg"].startswith(
            "Failed to construct the response: output 'y': Get illegal result"
        )


# -- statuses ------------------------------------------------------------------------------------


@pytest.fixture
def status_client(rt):
    svc = python_servable()

    @svc.stage
    def decode(x):
        if not isinstance(x, bytes):
            raise mindserve.InvalidInputError(f"x must be b64 bytes; got {type(x).__name__}")
        return np.frombuffer(x, np.uint8).astype(np.float32).sum()

    svc.add_method(lambda x: decode(x), name="decode", outputs="y")
    rt.start(svc)
    return TestClient(RestApp(rt, http_status=True))


def status_of(client, method, instances):
    reply = client.post(f"/model/py:{method}", content=json.dumps({"instances": instances}))
    return reply.status_code, reply.json()


def test_every_instance_failed_on_its_input_is_a_400_even_with_different_messages(status_client):
    status, reply = status_of(status_client, "check", [{"z": 1.0}, {"w": 1.0}])
    assert status == 400 and len(reply["instances"]) == 2


def test_every_instance_failed_in_the_server_is_a_500_even_with_different_messages(status_client):
    status, reply = status_of(status_client, "check", [{"x": -1.0}, {"x": -2.0}])
    assert status == 500 and "x must be >= 0, got -2.0" in reply["instances"][1]["error_msg"]


def test_mixed_outcomes_are_a_200_with_each_instances_error(status_client):
    status, reply = status_of(status_client, "check", [{"x": -1.0}, {"x": 1.0}, {"z": 1.0}])
    assert status == 200 and reply["instances"][1] == {"y": 2.0}
    assert "error_msg" in reply["instances"][0] and "error_msg" in reply["instances"][2]
    # every instance failed, some on their input and some in the server: a 500
    assert status_of(status_client, "check", [{"x": -1.0}, {"z": 1.0}])[0] == 500


def test_a_stage_raising_invalid_input_error_marks_the_clients_bad_value(status_client, rt):
    good = {"b64": base64.b64encode(b"\x01\x02").decode()}
    status, reply = status_of(status_client, "decode", [{"x": "text"}])
    assert status == 400 and "x must be b64 bytes; got str" in reply["error_msg"]
    status, reply = status_of(status_client, "decode", [{"x": good}, {"x": "text"}])
    assert status == 200 and reply["instances"][0] == {"y": 3.0}
    # in process: the instance fails with an InvalidInputError, located, caused by the stage's
    (error,) = rt.infer("py", "decode", [{"x": "text"}], return_exceptions=True)
    assert type(error) is mindserve.InvalidInputError and error.index == 0
    assert "stage 'decode': x must be b64 bytes; got str" in str(error)
    assert isinstance(error.__cause__, mindserve.InvalidInputError)
    outcomes = rt.metrics().method("py", "decode").instances
    assert outcomes.get("invalid_input", 0) >= 1 and "stage_error" not in outcomes


def test_by_default_every_reply_is_a_200(rt):
    rt.start(python_servable())
    client = TestClient(RestApp(rt))
    for instances in ([{"z": 1.0}, {"w": 1.0}], [{"x": -1.0}], [{"x": -1.0}, {"x": 1.0}]):
        assert client.post("/model/py:check", content=json.dumps({"instances": instances})).status_code == 200

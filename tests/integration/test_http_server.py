"""mindserve.http through a real uvicorn on 127.0.0.1: a real MindIR model, many HTTP callers
batched together, and an unchanged MindSpore Serving servable with its REST client (mindserve.compat).
(The protocol itself, through Starlette's test client: tests/unit/test_http.py.)"""

import base64
import json
import re
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the mindserve[http] extra (starlette) is not installed")

import mindserve
from mindserve import Batching
from mindserve.http import BackgroundServer, RestApp
from reference import run_net


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- a real uvicorn on 127.0.0.1 -----------------------------------------------------------------


def http_post(url, body, timeout=60):
    """POST as MindSpore Serving's examples do (a JSON string as the body); the reply's JSON."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def test_a_real_mindir_model_through_uvicorn_equals_the_network(rt, exported):
    pytest.importorskip("uvicorn", reason="the mindserve[http] extra (uvicorn) is not installed")
    svc = mindserve.Servable("mlp", directory=f"{exported['root']}/mlp")
    mlp = svc.model("mlp.mindir")
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    rt.start(svc, version=1)
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    expected = run_net(exported["nets"]["mlp_v1"], x)
    with BackgroundServer(RestApp(rt)) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        url = f"{server.url}/model/mlp:predict"
        as_lists = http_post(url, {"instances": [{"x": row.tolist()} for row in x]})
        np.testing.assert_allclose(
            [r["logits"] for r in as_lists["instances"]], expected, rtol=1e-5, atol=1e-6
        )
        as_b64 = http_post(
            url,
            {"instances": [{"x": {"b64": b64(row.tobytes()), "type": "fp32", "shape": [16]}} for row in x]},
        )
        assert as_b64 == as_lists
        wrong = http_post(url, {"instances": [{"x": x[0].tolist()}, {"x": [1.0, 2.0]}]})
        assert wrong["instances"][0] == as_lists["instances"][0]
        assert "expected float32 array of shape (16,)" in wrong["instances"][1]["error_msg"]
    assert not server.running
    with pytest.raises(urllib.error.URLError):
        http_post(url, {"instances": [{"x": x[0].tolist()}]}, timeout=5)


def test_requests_of_many_http_callers_are_batched_together(rt):
    """The model runs only once 8 instances wait (or after a minute): 8 callers of 8
    connections make one batch of 8."""
    pytest.importorskip("uvicorn", reason="the mindserve[http] extra (uvicorn) is not installed")
    sizes = []

    def times_ten(x):
        sizes.append(len(x))
        return x * 10

    svc = mindserve.Servable("g")
    m = svc.model(times_ten, batching=Batching(max_batch_size=8, max_delay=60, warm_up=False))
    svc.add_method(lambda x: m(x), name="f", outputs="y")
    rt.start(svc)
    results = [None] * 8
    with BackgroundServer(RestApp(rt)) as server:

        def call(i):
            results[i] = http_post(f"{server.url}/model/g:f", {"instances": [{"x": float(i)}]})

        callers = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(120)
    assert [r["instances"][0]["y"] for r in results] == [10.0 * i for i in range(8)]
    assert sizes == [8]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_mindspore_serving_rest_client_works_unchanged_against_a_compat_servable(served):
    """The request as MindSpore Serving's REST examples build it: a JSON string of instances
    made of numpy arrays' tolist(), posted to start_restful_server's address."""
    pytest.importorskip("uvicorn", reason="the mindserve[http] extra (uvicorn) is not installed")
    from mindserve.compat import server

    address = f"127.0.0.1:{free_port()}"
    server.start_restful_server(address)  # before the servables, as MindSpore Serving allows
    served("add")
    served("values")
    instances = []
    for i in range(3):
        x1 = np.asarray([1.1, 2.2, 3.3]).astype(np.float32) * (i + 1)
        x2 = np.asarray([5.5, 6.6, 7.7]).astype(np.float32) * (i + 1)
        instances.append({"x1": x1.tolist(), "x2": x2.tolist()})
    post_payload = json.dumps({"instances": instances})
    result = http_post(f"http://{address}/model/add:add_common", post_payload.encode())
    for i, item in enumerate(result["instances"]):
        np.testing.assert_allclose(item["y"], np.array([6.6, 8.8, 11.0]) * (i + 1), rtol=1e-5)
    versioned = http_post(f"http://{address}/model/add/version/1:add_common", post_payload.encode())
    assert versioned == result
    values = http_post(
        f"http://{address}/model/values:values",
        {
            "instances": [
                {"raw": {"b64": b64(b"\x01\x02\xff")}, "count": 3, "ratio": 0.5, "flag": True, "text": "hi"}
            ]
        },
    )
    assert values == {
        "instances": [
            {
                "raw": {"b64": b64(b"\x01\x02\xff")},
                "doubled": 6.0,
                "ratio2": 1.0,
                "negated": False,
                "text": "hi!",
                "rank": 0,
            }
        ]
    }
    failing = http_post(f"http://{address}/model/values:failing", {"instances": [{"x": [1.0]}, {"x": [0.0]}]})
    assert "Call Function 'values.fails' Failed" in failing["instances"][0]["error_msg"]
    assert failing["instances"][1] == {"y": [0.0]}
    missing = http_post(f"http://{address}/model/nope:m", {"instances": [{"x": 1}]})
    assert missing["error_msg"].startswith("Request servable(nope) method(m) , servable is not available")
    with pytest.raises(RuntimeError, match="Serving Error: RESTful server is already running"):
        server.start_restful_server(address)
    server.stop()
    with pytest.raises(urllib.error.URLError):
        http_post(f"http://{address}/model/add:add_common", post_payload.encode(), timeout=5)


def test_the_compat_queue_limit_applies_to_rest_requests(served):
    pytest.importorskip("uvicorn", reason="the mindserve[http] extra (uvicorn) is not installed")
    from mindserve.compat import server
    from mindserve.compat.server import master

    address = f"127.0.0.1:{free_port()}"
    served("add")
    server.start_restful_server(address)
    master.context.set_max_enqueued_requests(1)
    try:
        from mindserve.compat import _master_context

        assert _master_context.enter() is None  # one request in flight: the limit is reached
        try:
            reply = http_post(
                f"http://{address}/model/add:add_common", {"instances": [{"x1": [1.0] * 3, "x2": [1.0] * 3}]}
            )
        finally:
            _master_context.leave()
        assert reply == {"error_msg": "Serving Error: enqueued requests count exceeds the limit 1"}
    finally:
        master.context.set_max_enqueued_requests(10000)


@pytest.mark.parametrize(
    "address, message",
    [
        ("127.0.0.1", "The format of the RESTful server address '127.0.0.1' is illegal"),
        ("127.0.0.1:", "Missing ip or port of the RESTful server address '127.0.0.1:'"),
        (":5500", "Missing ip or port of the RESTful server address ':5500'"),
        ("127.0.0.1:port", "The type of RESTful server address '127.0.0.1:port' port is not a number"),
        ("127.0.0.1:70000", "is out of legal range [1 ~ 65535]"),
        ("unix:/tmp/sock", "RESTful server does not support binding to unix domain socket"),
    ],
)
def test_restful_server_addresses_are_checked_as_mindspore_serving_checks_them(address, message):
    from mindserve.compat import server

    with pytest.raises(RuntimeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        server.start_restful_server(address)


def test_an_address_in_use_is_a_runtime_error_in_mindspore_servings_words():
    pytest.importorskip("uvicorn", reason="the mindserve[http] extra (uvicorn) is not installed")
    from mindserve.compat import server

    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(RuntimeError, match="RESTful server start failed, bind to the socket address"):
            server.start_restful_server(address)
    server.stop()


def test_https_with_an_ssl_config(served, tmp_path):
    """SSLConfig's certificate and key serve HTTPS, as MindSpore Serving's server does."""
    pytest.importorskip("uvicorn", reason="the mindserve[http] extra (uvicorn) is not installed")
    import shutil
    import ssl

    from mindserve.compat import server

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a certificate")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(RuntimeError, match=r"Serving Error: load certificate_chain from .* failed"):
        server.start_restful_server("127.0.0.1:1", ssl_config=server.SSLConfig(str(key), str(key)))
    other = tmp_path / "other.key"  # a key of another certificate: the key fails, as in OpenSSL
    subprocess.run(["openssl", "genrsa", "-out", str(other), "2048"], check=True, capture_output=True)
    with pytest.raises(
        RuntimeError, match=f"Serving Error: load private_key from {re.escape(str(other))} failed"
    ):
        server.start_restful_server("127.0.0.1:1", ssl_config=server.SSLConfig(str(cert), str(other)))
    address = f"127.0.0.1:{free_port()}"
    served("add")
    server.start_restful_server(address, ssl_config=server.SSLConfig(str(cert), str(key)))
    context = ssl.create_default_context(cafile=str(cert))
    body = json.dumps({"instances": [{"x1": [1.0, 2.0, 3.0], "x2": [1.0, 1.0, 1.0]}]}).encode()
    request = urllib.request.Request(f"https://{address}/model/add:add_common", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60, context=context) as reply:
        assert json.loads(reply.read()) == {"instances": [{"y": [2.0, 3.0, 4.0]}]}


# -- slow clients ----------------------------------------------------------------------------------


def echo_servable():
    svc = mindserve.Servable("py")

    @svc.stage
    def same(x):
        return x

    svc.add_method(lambda x: same(x), name="echo", outputs="y")
    return svc


def test_a_body_that_stops_short_is_answered_408_and_dropped_after_the_body_timeout(rt):
    """Idle clients one byte short of their Content-Length do not hold the server's memory
    for ever: after body_timeout each gets a 408 and its connection closes; others are served."""
    rt.start(echo_servable())
    with BackgroundServer(RestApp(rt), body_timeout=0.5) as server:
        body = json.dumps({"instances": [{"x": "a" * 100_000}]}).encode()
        slow = []
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            client.sendall(
                b"POST /model/py:echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body[:-1]
            )
            slow.append(client)
        assert http_post(f"{server.url}/model/py:echo", {"instances": [{"x": 1}]}) == {
            "instances": [{"y": 1}]
        }
        for client in slow:
            reply = b""
            while chunk := client.recv(65536):  # until the server closes (the socket timeout: a hang guard)
                reply += chunk
            client.close()
            head, _, text = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), reply[:200]
            assert json.loads(text) == {"error_msg": "the request body did not arrive within 0.5 s"}


def test_background_server_limits_connections_by_default_and_checks_its_options(rt):
    rt.start(echo_servable())
    with BackgroundServer(RestApp(rt)) as server:
        assert server._server.config.limit_concurrency == 256
    with BackgroundServer(RestApp(rt), limit_concurrency=None, body_timeout=None) as server:
        assert server._server.config.limit_concurrency is None
        assert http_post(f"{server.url}/model/py:echo", {"instances": [{"x": 2}]}) == {
            "instances": [{"y": 2}]
        }
    with pytest.raises(
        mindserve.InvalidArgumentError, match="body_timeout must be a number > 0 or None; got 0"
    ):
        BackgroundServer(RestApp(rt), body_timeout=0)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_100_kb_servable_name_is_answered_briefly_over_real_http(rt, http):
    pytest.importorskip(http)
    rt.start(echo_servable())
    with BackgroundServer(RestApp(rt, http_status=True), http=http) as server:
        client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        body = b'{"instances": [{"x": 1}]}'
        client.sendall(
            b"POST /model/%s:echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (b"n" * 100_000, len(body), body)
        )
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
        client.close()
    assert len(reply) < 2000, reply[:300]
    head, _, text = reply.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 404"):  # the app answered, the name cut short
        assert "servable is not available" in json.loads(text)["error_msg"]
    else:  # the HTTP parser refused the request line itself
        assert head.startswith(b"HTTP/1.1 4"), reply[:300]

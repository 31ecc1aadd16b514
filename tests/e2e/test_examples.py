"""The examples (scripts and notebook) and the README's code run as a new user would run them."""

import os
import re
import subprocess
import sys

import pytest

import notebooks
from paths import ROOT

pytestmark = pytest.mark.warm_up  # run as a user would: warm-up as the environment says


def test_quickstart_runs_and_classifies(tmp_path):
    script = os.path.join(ROOT, "examples", "quickstart.py")
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = subprocess.run(
        [sys.executable, script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert out.returncode == 0, out.stderr
    assert not list(temp.iterdir()), "the quickstart leaves nothing in the temporary directory"
    lines = out.stdout.splitlines()
    assert lines[0] == "serving rows version 1 on CPU:0"
    for line in lines[1:6]:
        row, label = re.match(r"bright row (\d): label (\d) \(p=", line).groups()
        assert row == label
    assert lines[6] == "good instance: label 3"
    assert lines[7].startswith("bad instance: servable 'rows' version 1, method 'classify', instance 1: ")


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def test_readme_python_runs(tmp_path):
    """Every ```python block of the README runs, in order, in one fresh interpreter."""
    blocks = re.findall(r"```python\n(.*?)```", readme(), re.S)
    assert blocks
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr


def test_readme_gives_exactly_two_commands_and_ci_runs_the_second():
    commands = re.findall(r"```sh\n(.*?)```", readme(), re.S)
    assert len(commands) == 2
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    assert commands[1].strip() in ci


def test_workers_example_serves_the_same_results_from_two_workers(tmp_path):
    script = os.path.join(ROOT, "examples", "workers.py")
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["worker 0", "worker 1"]
    assert all(", ready, " in line for line in lines[:2])
    assert lines[2] == "same results: True"
    assert lines[3].startswith("in-process ")


def test_the_pythons_promised_are_those_mindspore_has_wheels_for():
    """MindSpore 2.10 publishes wheels for Python 3.10 to 3.12: _requirements.py (which setup.py
    reads), setup.py's classifiers and the README say so."""
    from mindserve._requirements import PYTHON_REQUIREMENT

    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as handle:
        setup = handle.read()
    assert PYTHON_REQUIREMENT == ">=3.10,<3.13"
    assert 'python_requires=_read("_requirements.py", "PYTHON_REQUIREMENT")' in setup
    for minor in ("3.10", "3.11", "3.12"):
        assert f'"Programming Language :: Python :: {minor}"' in setup
    assert "Python 3.10, 3.11 or 3.12" in readme()


def test_the_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(os.path.join(ROOT, "examples", "quickstart.ipynb"), as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_notebook_runs_cell_by_cell_and_leaves_nothing_behind(tmp_path):
    """examples/quickstart.ipynb in a fresh kernel: every cell runs, and says what the text says."""
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(os.path.join(ROOT, "examples", "quickstart.ipynb"), as_version=4)
    cwd, temp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temp.mkdir()
    notebooks.execute(notebook, cwd, env={**os.environ, "TMPDIR": str(temp)})
    said = {}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            said[cell.source.splitlines()[0]] = notebooks.text(cell)
    assert said["rt = mindserve.Runtime()"].startswith("serving weather version 1 on CPU:0")
    assert "'label': 'rainy'" in said["rt = mindserve.Runtime()"]
    assert said["import asyncio"].strip() == "['sunny', 'rainy', 'stormy']"  # top-level await
    assert "model weather: " in said["for running in rt.status():"]
    assert said["export_version(2, [[1.0, -1.0, -2.0, 2.0],"].strip() == "default version 2: sunny -> stormy"
    mixed = said["mixed = [days[0], day(0.5, 1.7, 0.2, 0.5), days[2]]"].splitlines()
    assert [line.split()[0] for line in mixed] == ["dict", "StageError", "dict"]
    assert mixed[1].startswith("StageError servable 'weather' version 2, method 'predict', instance 1: ")
    assert "failed instances: [1]" in said["try:"]
    assert said["rt.close()"].strip() == "False"
    assert not list(temp.iterdir()), "the notebook leaves nothing in the temporary directory"
    assert not list(cwd.iterdir()), "the notebook leaves nothing in its working directory"


# -- examples/fastapi_app.py: the web app recipe over real HTTP on 127.0.0.1 -------------------------


def load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"example_{name}", os.path.join(ROOT, "examples", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def request(url, body=None, headers=None):
    """(status, JSON) of a GET (no body) or POST."""
    import json
    import urllib.error
    import urllib.request

    headers = headers or {"Content-Type": "application/json"}
    call = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(call, timeout=60) as reply:
            status, text = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    return status, (json.loads(text) if text[:1] in b"{[" else text.decode())


def multipart(field, filename, data):
    boundary = "mindserveboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_fastapi_example_serves_json_uploads_restapp_and_metrics_and_closes_at_shutdown():
    pytest.importorskip("fastapi", reason="the test extra installs FastAPI")
    import base64
    import json

    import numpy as np

    from mindserve.http import BackgroundServer

    example = load_example("fastapi_app")
    image = (np.arange(64) * 4).astype(np.uint8).tobytes()
    pixels = (np.frombuffer(image, np.uint8) / 255).tolist()
    with BackgroundServer(example.app) as server:  # runs the app's lifespan: the runtime starts
        status, by_json = request(f"{server.url}/classify", json.dumps({"pixels": pixels}).encode())
        assert status == 200 and by_json["pid"] == os.getpid()
        rt = example.app.state.rt
        status, by_upload = request(f"{server.url}/classify/upload", *multipart("image", "x.raw", image))
        assert status == 200
        assert by_upload["label"] == by_json["label"] and np.allclose(by_upload["logits"], by_json["logits"])
        assert by_json["label"] == int(np.argmax(by_json["logits"]))
        # the client's bad file is a 400 saying why; a wrong pixel count too
        status, bad = request(f"{server.url}/classify/upload", *multipart("image", "x.raw", b"\x00" * 10))
        assert status == 400 and bad["detail"] == "an image is 64 bytes of 8-bit gray; got 10 bytes"
        status, short = request(f"{server.url}/classify", json.dumps({"pixels": [0.5] * 3}).encode())
        assert status == 400 and "pixels" in short["detail"]
        # MindSpore Serving's protocol, mounted: the same answer
        body = json.dumps({"instances": [{"image": {"b64": base64.b64encode(image).decode()}}]}).encode()
        status, served = request(f"{server.url}/serving/model/digits:classify", body)
        assert status == 200 and served["instances"][0]["label"] == by_json["label"]
        status, metrics = request(f"{server.url}/metrics/")
        assert (
            status == 200
            and 'mindserve_requests_total{method="classify",outcome="ok",servable="digits"' in metrics
        )
    assert "closed" in repr(rt)  # await rt.aclose() ran at shutdown


def test_fastapi_example_under_uvicorn_with_two_worker_processes(tmp_path):
    """The runtime is made in the lifespan, so each of uvicorn's worker processes has its own
    (a slow test, about 15 s: it starts a uvicorn and two processes that each import MindSpore)."""
    pytest.importorskip("fastapi", reason="the test extra installs FastAPI")
    import json
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(port), "--workers", "2"],
        cwd=os.path.join(ROOT, "examples"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        pids = set()
        while len(pids) < 1 or (time.monotonic() < deadline and not pids):
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()[
                -3000:
            ]
            try:
                status, reply = request(
                    f"http://127.0.0.1:{port}/classify", json.dumps({"pixels": [0.25] * 64}).encode()
                )
            except OSError:
                time.sleep(0.5)
                continue
            assert status == 200 and 0 <= reply["label"] < 10, reply
            pids.add(reply["pid"])
        assert server.pid not in pids  # served by a worker process, not uvicorn's supervisor
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0, out.decode()[-3000:]

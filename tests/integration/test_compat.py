"""MindSpore Serving 2.0 servables, unchanged, through mindserve.compat (real MindSpore)."""

import importlib.util
import logging
import os
import re
import shutil
import socket
import sys
import textwrap

import numpy as np
import pytest

import mindserve
from mindserve import LoadError
from mindserve.compat import load_servable, server
from mindserve.compat.client import Client
from reference import run_net


def floats(*values):
    return np.array(values, np.float32)


def test_tensor_add_through_the_compat_client(served):
    served("add")
    x1, x2 = floats(1, 2, 3), floats(10, 20, 30)
    result = Client("localhost:5500", "add", "add_common").infer([{"x1": x1, "x2": x2}, {"x1": x2, "x2": x2}])
    assert [r["y"].tolist() for r in result] == [[11, 22, 33], [20, 40, 60]]
    cast = Client("localhost:5500", "add", "add_cast").infer({"x1": np.arange(3), "x2": np.arange(3)})
    assert cast[0]["y"].tolist() == [0, 2, 4]
    assert Client("", "add", "add_common").infer_async([{"x1": x1, "x2": x1}]).result()[0]["y"].tolist() == [
        2,
        4,
        6,
    ]


def test_compat_results_equal_the_native_api(served, compat_root, rt):
    served("add")
    x1, x2 = floats(0.5, -1, 2), floats(3, 4, 5)
    compat = Client("", "add", "add_common").infer([{"x1": x1, "x2": x2}])[0]["y"]
    native = mindserve.Servable("add", directory=os.path.join(compat_root["root"], "add"))
    model = native.model("tensor_add.mindir")
    native.add_method(lambda x1, x2: model(x1, x2), name="add_common", outputs="y")
    rt.start(native)
    np.testing.assert_array_equal(rt.infer("add", "add_common", [{"x1": x1, "x2": x2}])[0]["y"], compat)


def test_errors_come_back_per_instance_and_per_request(served):
    served("add")
    client = Client("", "add", "add_common")
    results = client.infer(
        [{"x1": floats(1, 2, 3), "x2": floats(1, 2, 3)}, {"x1": floats(1, 2), "x2": floats(1, 2)}]
    )
    assert results[0]["y"].tolist() == [2, 4, 6]
    assert set(results[1]) == {"error"} and "expected 3 float32 elements" in results[1]["error"]
    assert results[1]["error"].startswith("Given model input 0 size 8 not match the size 12 defined in model")
    single = client.infer({"x1": np.zeros(3, np.int32), "x2": np.zeros(3, np.int32)})
    assert set(single) == {"error"} and "float32" in single["error"]
    assert single["error"].startswith(
        "Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32"
    )
    nope = Client("", "add", "nope").infer({"x1": 1})["error"]
    assert (
        nope.startswith("Request servable(add) method(nope) , method is not available")
        and "no method 'nope'" in nope
    )
    missing = Client("", "missing", "m").infer({"x1": 1})["error"]
    assert missing.startswith("Request servable(missing) method(m) , servable is not available")
    assert "no servable named 'missing'" in missing
    old = Client("", "add", "add_common", version_number=7).infer({"x1": 1})["error"]
    assert old.startswith("Request servable(add) method(add_common)  version(7) , servable is not available")
    with pytest.raises(RuntimeError, match="instance should be a map"):
        client.infer([[1, 2]])


def test_pipeline_of_preprocess_two_models_and_postprocess(served, compat_root):
    """The preprocess returns (4, 4) for a (16,) model input: accepted, as in MindSpore Serving."""
    served("pipeline")
    image = np.arange(16, dtype=np.uint8) * 10
    bias = np.ones(10, np.float32)
    (result,) = Client("", "pipeline", "classify").infer([{"image": image, "bias": bias}])
    logits = run_net(compat_root["mlp"], (image.astype(np.float32) / 255.0)[None])[0]
    assert result["label"] == int(np.argmax(logits))
    assert result["total"] == pytest.approx(float((logits + 1).sum()), rel=1e-5)


def test_batch_functions(served):
    served("batchfn")
    instances = [{"x1": floats(k, k, k), "x2": floats(1, 2, 3)} for k in range(6)]
    results = Client("", "batchfn", "run").infer(instances)
    assert [r["y"].tolist() for r in results] == [[2 * k + 2, 2 * k + 4, 2 * k + 6] for k in range(6)]
    assert [r["total"] for r in results] == [6 * k + 12 for k in range(6)]


def test_model_with_two_subgraphs_and_model_call_forms(served):
    served("subgraphs")
    x1, x2 = floats(1, 2, 3), floats(2, 2, 2)
    (result,) = Client("", "subgraphs", "compute").infer([{"x1": x1, "x2": x2}])
    assert result["y"].tolist() == [6, 8, 10]
    many = Client("", "subgraphs", "add_many").infer([{"x1": x1, "x2": x2}, {"x1": x2, "x2": x2}])
    assert [r["y"].tolist() for r in many] == [[3, 4, 5], [4, 4, 4]]


def test_legacy_call_servable_interfaces(served):
    served("legacy")
    (result,) = Client("", "legacy", "add_cast").infer([{"x1": np.arange(3), "x2": np.ones(3)}])
    assert result["y"].tolist() == [1, 2, 3] and result["total"] == 6.0
    piped = Client("", "legacy", "add_pipeline").infer([{"x1": np.arange(3), "x2": np.ones(3)}] * 3)
    assert [r["total"] for r in piped] == [6.0, 6.0, 6.0]


def test_start_servable_in_master_and_network_calls_are_accepted(compat_root, caplog, monkeypatch):
    """Without the mindserve[http] extra, start_restful_server logs that it starts nothing
    (tests/integration/test_http_server.py serves it when the extra is installed)."""
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    with socket.create_server(("127.0.0.1", 0)) as free:
        grpc_address = f"127.0.0.1:{free.getsockname()[1]}"
    with caplog.at_level(logging.WARNING, logger="mindserve.compat"):
        server.start_servable_in_master(compat_root["root"], "add", version_number=1)
        server.start_grpc_server(grpc_address)
        server.start_restful_server("127.0.0.1:1500")
    try:
        assert f"has no network layer: start_grpc_server('{grpc_address}') starts nothing" in caplog.text
        assert "start_restful_server('127.0.0.1:1500') starts nothing" in caplog.text
        assert "pip install 'mindserve[http]'" in caplog.text
        assert Client("", "add", "add_common").infer({"x1": floats(1, 1, 1), "x2": floats(1, 1, 1)})[0][
            "y"
        ].tolist() == [2, 2, 2]
    finally:
        server.stop()


def test_import_system_is_left_as_it_was(compat_root):
    before = {name: sys.modules.get(name) for name in ("mindspore_serving", "mindspore_serving.server")}
    load_servable(compat_root["root"], "add")
    assert {name: sys.modules.get(name) for name in before} == before
    assert "mindspore_serving.server.register" not in sys.modules


LOGGING = """
import socket
from mindserve.compat import log, server
log.info("info msg"); log.warning("warning msg"); log.error("error msg"); log.debug("debug msg")
with socket.create_server(("127.0.0.1", 0)) as free:
    address = f"127.0.0.1:{free.getsockname()[1]}"
server.start_grpc_server(address)  # held: INFO on the server's logger
try:
    server.start_grpc_server(address)
except RuntimeError:
    pass  # logged at ERROR on the server's logger
"""


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"GLOG_v": "2"}, ["[WARNING] SERVING(", "warning msg", "error msg", "already running"]),
        ({"GLOG_v": "3"}, ["error msg", "already running"]),
        ({"GLOG_v": "3", "MS_SUBMODULE_LOG_v": "{SERVING:1}"}, ["[INFO]", "held", "already running"]),
        ({"GLOG_v": "0"}, ["info msg", "debug msg", "[INFO]", "already running"]),
    ],
)
def test_the_log_follows_glog_v_as_mindspore_servings_does(env, expected):
    """GLOG_v sets mindserve.compat.log's level (MS_SUBMODULE_LOG_v's SERVING entry the
    server's own messages'), as in MindSpore Serving; every level above it is left out."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", LOGGING],
        env={**os.environ, "MS_SUBMODULE_LOG_v": "", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr
    levels = ["[DEBUG]", "[INFO]", "[WARNING]", "[ERROR]"]
    lowest = min(levels.index(text) for text in levels if text in done.stderr)
    assert lowest == min(
        int(env.get("GLOG_v", 2)), 1 if "SERVING:1" in env.get("MS_SUBMODULE_LOG_v", "") else 3
    )


def test_a_servable_config_logs_through_mindspore_servings_log(tmp_path, caplog):
    write_servable(
        tmp_path,
        "logging",
        """
        from mindspore_serving import log as logger
        from mindspore_serving.server import register
        logger.error("config loaded")

        def identity(x):
            return x

        @register.register_method(output_names="y")
        def echo(x):
            return register.add_stage(identity, x, outputs_count=1)
        """,
        versions=(),
    )
    from mindserve.compat import log

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log._get_logger().addHandler(handler)
    try:
        assert "echo" in load_servable(str(tmp_path), "logging").methods
    finally:
        log._get_logger().removeHandler(handler)
    assert [record.getMessage() for record in records] == ["config loaded"]


def write_servable(root, name, config, versions=(1,)):
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "servable_config.py").write_text(textwrap.dedent(config))
    for version in versions:
        (directory / str(version)).mkdir()
    return str(root)


HEADER = """
from mindspore_serving.server import register
def identity(x):
    return x
"""


@pytest.mark.parametrize(
    "config, match",
    [
        (
            HEADER
            + """
model = register.declare_model("a.mindir", "MindIR")
again = register.declare_model("a.mindir", "MindIR")
""",
            r"Declare model \[a.mindir\] failed, model file 'a.mindir' has already been used",
        ),
        (
            HEADER
            + """
model = register.declare_model("a.mindir", "MindIR")
both = register.declare_model(["b.mindir", "a.mindir"], "MindIR")
""",
            r"Declare model \[b.mindir, a.mindir\] failed, model file 'a.mindir' has already been used",
        ),
        (  # MindSpore Serving traces a method before it registers its name
            HEADER
            + """
@register.register_method(output_names=["y"])
def f(x):
    return register.add_stage(identity, x, outputs_count=1)
@register.register_method(output_names=["y"])
def f(x):
    return register.add_stage(identity, x, outputs_count=1, batch_size=4)
""",
            "parameter 'batch_size' in multiple 'add_stage' should be enabled or disabled consistently",
        ),
        (  # the counts first, then batch_size (MindSpore Serving's order)
            HEADER
            + """
@register.register_method(output_names=["y"])
def f(x):
    return register.add_stage(identity, x, outputs_count=1)
@register.register_method(output_names=["y", "z"])
def g(x, z):
    return register.add_stage(identity, x, z, outputs_count=2, batch_size=2)
""",
            r"Stage function 'bad.identity' inputs count 2 not match last registered count 1, method name 'g'",
        ),
        (  # the tag before the inputs
            HEADER
            + """
@register.register_method(output_names=["y"])
def f(x):
    return register.add_stage(identity, 1, outputs_count=1, tag="")
""",
            "Parameter 'tag' should not be empty str",
        ),
        (
            HEADER
            + """
@register.register_method(output_names=["y"])
def f(x):
    return register.add_stage(identity, x, outputs_count=1)
@register.register_method(output_names=["y"])
def f(x):
    return register.add_stage(identity, x, outputs_count=1)
""",
            "Method f has been registered more than once",
        ),
        (
            HEADER
            + """
@register.register_method(output_names=["y"])
def f(x, z):
    return register.add_stage(identity, x, z, outputs_count=1)
""",
            "function identity input args count 1 not match the count 2 registered in method",
        ),
        (
            HEADER
            + """
@register.register_method(output_names=["y", "z"])
def f(x):
    return register.add_stage(identity, x, outputs_count=1)
""",
            "returns 1 value but declares 2 outputs",
        ),
        (HEADER + "model = register.declare_model('a.om', 'OM')\n", "export the model as MindIR"),
        (HEADER + "raise ValueError('broken config')\n", "ValueError: broken config"),
    ],
)
def test_config_errors_are_load_errors(tmp_path, config, match):
    root = write_servable(tmp_path, "bad", config)
    with pytest.raises(LoadError, match=match):
        load_servable(root, "bad")


def test_missing_directory_config_version(tmp_path, rt):
    with pytest.raises(LoadError, match=r"directory '.*nothing' not exist"):
        load_servable(str(tmp_path), "nothing")
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(LoadError, match=r"servable_config\.py' not exist"):
        load_servable(str(tmp_path), "noconfig")
    config = (
        HEADER
        + """
model = register.declare_model("a.mindir", "MindIR")
@register.register_method(output_names=["y"])
def f(x):
    return register.add_stage(model, x, outputs_count=1)
"""
    )
    root = write_servable(tmp_path / "r1", "noversion", config, versions=())
    with pytest.raises(mindserve.VersionNotFoundError, match="no version directory"):
        rt.start(load_servable(root, "noversion"))
    root = write_servable(tmp_path / "r2", "v1only", config)
    with pytest.raises(mindserve.VersionNotFoundError, match=r"has no version 2 .*available: \[1\]"):
        rt.start(load_servable(root, "v1only"), version=2)


def test_register_outside_a_load_is_a_clear_error():
    from mindserve.compat import register

    with pytest.raises(
        mindserve.DefinitionError, match=r"can only be used in a servable_config\.py loaded by"
    ):
        register.declare_model("a.mindir", "MindIR")


def test_device_ids_and_parallel_workers_start_worker_processes(compat_root, tmp_path, monkeypatch):
    """MindSpore Serving's num_parallel_workers and several device_ids: worker processes."""
    monkeypatch.chdir(tmp_path)
    try:
        server.start_servables(
            server.ServableStartConfig(compat_root["root"], "batchfn", device_ids=0, num_parallel_workers=2)
        )
        (status,) = server.runtime().status()
        assert [w.device_id for w in status.workers] == [0, 0]
        assert all(w.state == "ready" and w.pid != os.getpid() for w in status.workers)
        x1, x2 = floats(1, 2, 3), floats(10, 20, 30)
        (result,) = Client("localhost:5500", "batchfn", "run").infer([{"x1": x1, "x2": x2}])
        assert result["y"].tolist() == [22, 44, 66] and result["total"] == 132
    finally:
        server.stop()
    # Each worker's output in the file MindSpore Serving writes it to (made anew at a start).
    logs = sorted(os.listdir("serving_logs"))
    assert logs == ["log_batchfn_device0_version1.log", "log_batchfn_extra0_version1.log"]


@pytest.mark.parametrize(
    ("device_ids", "parallel", "logs"),
    [
        (0, 2, ["device0", "extra0"]),
        ([1, 2], 3, ["device1", "device2", "extra0"]),
        (None, 2, ["extra0", "extra1"]),  # no device listed: every worker is an extra one
    ],
)
def test_worker_log_files_are_named_as_mindspore_serving_names_them(
    tmp_path, monkeypatch, device_ids, parallel, logs
):
    from mindserve.compat.server import _device_count, _serving_log, _worker_devices

    monkeypatch.chdir(tmp_path)
    name = _serving_log(_device_count(device_ids))
    devices = _worker_devices(device_ids, parallel)
    files = [name(servable="s", version=1, index=i, device_id=d) for i, d in enumerate(devices)]
    assert files == [os.path.join("serving_logs", f"log_s_{worker}_version1.log") for worker in logs]
    assert os.path.isdir("serving_logs")


@pytest.mark.parametrize(
    ("device_ids", "parallel", "expected"),
    [
        (0, 0, None),
        (0, 1, None),
        ([0], 0, None),
        ((0, 1), 0, [0, 1]),
        ([0, 1], 3, [0, 1, 0]),
        (None, 2, [0, 0]),
    ],
)
def test_worker_devices_follow_mindspore_serving(device_ids, parallel, expected):
    from mindserve.compat.server import _worker_devices

    assert _worker_devices(device_ids, parallel) == expected


# -- values as MindSpore Serving's client and worker hand them over -------------------------


def test_stages_get_numpy_arrays_as_mindspore_serving_hands_them(served):
    """bytes arrive as a uint8 array, Python numbers as arrays of shape [1], str as str."""
    served("values")
    (result,) = Client("", "values", "values").infer(
        [{"raw": b"\x01\x02\xff", "count": 3, "ratio": 0.5, "flag": True, "text": "hi"}]
    )
    assert result["raw"] == b"\x01\x02\xff" and type(result["raw"]) is bytes
    assert result["doubled"].dtype == np.float32 and result["doubled"].tolist() == [6.0]
    assert result["ratio2"].dtype == np.float64 and result["ratio2"].tolist() == [1.0]
    assert result["negated"].dtype == np.bool_ and result["negated"].tolist() == [False]
    assert result["text"] == "hi!"
    # A numpy scalar result (np.argmax) becomes an array of shape [], as in MindSpore Serving.
    assert isinstance(result["rank"], np.ndarray) and result["rank"].shape == () and result["rank"] == 0


def test_a_numpy_bool_scalar_result_is_a_tensor(served):
    """``~flag`` on a 0-d bool array is a numpy bool scalar, a tensor as any numpy scalar is."""
    served("values")
    (result,) = Client("", "values", "values").infer(
        [{"raw": b"", "count": np.array(3), "ratio": np.array(0.5), "flag": np.array(True), "text": "x"}]
    )
    assert isinstance(result["negated"], np.ndarray) and result["negated"].shape == ()
    assert result["negated"].dtype == np.bool_ and not result["negated"]


def test_the_client_rejects_what_mindspore_serving_rejects(served):
    served("values")
    client = Client("", "values", "values")
    with pytest.raises(RuntimeError, match="Not support value type <class 'list'>"):
        client.infer({"raw": [1, 2]})
    with pytest.raises(RuntimeError, match="Unknown data type complex64"):
        client.infer({"raw": np.zeros(2, np.complex64)})


def test_a_stage_result_that_is_no_tensor_fails_its_instance(served):
    served("values")
    results = Client("", "values", "illegal").infer([{"x": np.array([i], np.float32)} for i in range(4)])
    assert "Get illegal result data with type <class 'NoneType'>" in results[0]["error"]
    # A list holds a stage's outputs, as in MindSpore Serving: two of them here, for one registered.
    assert "The outputs number 2 of one instance returned by function 'illegal_result'" in results[1]["error"]
    assert "Get illegal result data with type <class 'dict'>" in results[2]["error"]
    assert results[3]["y"].shape == () and results[3]["y"] == 7


def test_batch_functions_results_beyond_the_instances_are_ignored_and_too_few_keep_theirs(served):
    served("values")
    instances = [{"x": np.array([float(i)], np.float32)} for i in range(3)]
    extra = Client("", "values", "extra").infer(instances)
    assert [r["y"].tolist() for r in extra] == [[0.0], [2.0], [4.0]]
    missing = Client("", "values", "missing").infer(instances)
    # As in MindSpore Serving: the instances the batch function answered keep their
    # results, the one it gave none for fails (no rerun one instance at a time).
    assert [r["y"].tolist() for r in missing[:2]] == [[0.0], [2.0]]
    assert missing[2]["error"] == (
        "Call Function 'values.one_too_few' Failed, method: 'missing', stage index(begin with 1): 1, error msg: "
        "The number 2 of instances returned by function 'one_too_few' is not equal to the number 3 of "
        "instances provided to this function."
    )


def test_an_image_sent_as_bytes_is_decoded_in_a_stage_with_pillow(served):
    pil = pytest.importorskip("PIL.Image")
    import io

    served("values")
    buffer = io.BytesIO()
    pil.new("RGB", (4, 4), (255, 0, 51)).save(buffer, format="PNG")
    result = Client("", "values", "image").infer([{"png": buffer.getvalue()}])
    assert isinstance(result, list), result
    (result,) = result
    np.testing.assert_allclose(result["y"], [2.0, 1.0, 1.2], rtol=1e-6)


def test_a_model_with_several_outputs_used_through_model_call(served):
    """Its output count comes from the model file, not from a declaration."""
    served("multi")
    x, y = floats(1, 2, 3), floats(10, 20, 30)
    (result,) = Client("", "multi", "run").infer([{"x": x, "y": y}])
    assert result["sum"].tolist() == [11, 22, 33] and result["product"].tolist() == [10, 40, 90]
    (pair,) = Client("", "multi", "batch").infer([{"x": x, "y": y}])
    assert pair["first"].tolist() == pair["second"].tolist() == [21, 62, 123]
    empty = Client("", "multi", "empty").infer([{"x": x}])
    assert "Input instances count is 0" in empty["error"]
    short = Client("", "multi", "short").infer([{"x": x}])
    assert (
        "error msg: Model(addmul.mindir).call() failed: The inputs count 1 of instance 0 is not equal to the "
        "inputs count 2 of the model" in short["error"]
    )
    beyond = Client("", "multi", "beyond").infer([{"x": x, "y": y}])
    assert (
        "Model(addmul.mindir, subgraph=1).call() failed: The model does not have subgraph of index 1, the subgraph "
        "count of the model is 1" in beyond["error"]
    )
    wrong = Client("", "multi", "wrong_size").infer([{"x": x, "y": y}])
    assert (
        "Model(addmul.mindir).call() failed: Given model input 0 size 8 not match the size 12"
        in wrong["error"]
    )


@pytest.mark.parametrize("name", ["..", ".", "../compat", "a/b", ""])
def test_a_servable_name_cannot_leave_the_servable_directory(compat_root, name):
    with pytest.raises(LoadError, match="must name a directory inside"):
        load_servable(compat_root["root"], name)


def test_a_model_file_cannot_leave_the_version_directory(tmp_path):
    write_servable(
        tmp_path,
        "escape",
        "from mindspore_serving.server import register\n"
        "model = register.declare_model(model_file='../../x.mindir', model_format='MindIR')\n",
    )
    with pytest.raises(LoadError, match="outside the servable's version directory"):
        load_servable(str(tmp_path), "escape")


STAGE_REUSE = """
from mindspore_serving.server import register

def batch(instances):
    return [x for x, *_ in instances]

def single(x):
    return x

@register.register_method(output_names=["y"])
def first(x, y):
    return register.add_stage({first})

@register.register_method(output_names=["y"])
def second(x, y):
    return register.add_stage({second})
"""


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            "batch, x, outputs_count=1, batch_size=2",
            "batch, x, y, outputs_count=1, batch_size=2",
            "Stage function 'reuse.batch' inputs count 2 not match last registered count 1, method name 'second'",
        ),
        (
            "batch, x, outputs_count=1, batch_size=2",
            "batch, x, outputs_count=2, batch_size=2",
            "Stage function 'reuse.batch' outputs count 2 not match last registered count 1, method name 'second'",
        ),
        (
            "single, x, outputs_count=1",
            "single, x, outputs_count=1, batch_size=2",
            "Failed to add stage function reuse.single: parameter 'batch_size' in multiple 'add_stage' should "
            "be enabled or disabled consistently",
        ),
    ],
)
def test_one_stage_function_is_used_one_way(tmp_path, first, second, message):
    write_servable(tmp_path, "reuse", STAGE_REUSE.format(first=first, second=second), versions=())
    with pytest.raises(LoadError) as raised:
        load_servable(str(tmp_path), "reuse")
    assert message in str(raised.value)


def test_one_stage_function_used_the_same_way_twice_is_fine(tmp_path):
    same = "batch, x, outputs_count=1, batch_size=2"
    write_servable(
        tmp_path, "reuse", STAGE_REUSE.format(first=same, second=same.replace("2", "4")), versions=()
    )
    assert set(load_servable(str(tmp_path), "reuse").methods) == {"first", "second"}


# -- start configuration, as MindSpore Serving checks it --------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_parallel_workers": 65}, "Parameter 'num_parallel_workers' should be in range [0,64]"),
        (
            {"num_parallel_workers": True},
            "Parameter 'num_parallel_workers' should be int, but actually <class 'bool'>",
        ),
        ({"device_ids": [0, 0]}, "The item value '0' in parameter 'device_ids' should not be repeated"),
        (
            {"device_ids": "0"},
            "Parameter 'device_ids' should be int or tuple/list of int, but actually <class 'str'>",
        ),
        ({"device_ids": [1, -1]}, "The item value '-1' in parameter 'device_ids' should be >= 0"),
        (
            {"device_type": "tpu"},
            "Unsupported device type 'tpu', only support 'Ascend', 'GPU', 'CPU' and None, case ignored",
        ),
        ({"device_type": ""}, "Parameter 'device_type' should not be empty str"),
        ({"version_number": -1}, "Parameter 'version_number' should be >= 0"),
        ({"dec_key": b"abc"}, "Parameter 'dec_key' length 3 expected to be 16, 24 or 32"),
        ({"dec_key": "0123456789ABCDEF"}, "Parameter 'dec_key' should be bytes, but actually <class 'str'>"),
        ({"dec_mode": "AES-XTS"}, "Parameter 'dec_mode' expected to be 'AES-GCM' or 'AES-CBC'"),
    ],
)
def test_start_config_parameters_are_checked_as_mindspore_serving_checks_them(compat_root, options, message):
    with pytest.raises(RuntimeError) as raised:
        server.ServableStartConfig(compat_root["root"], "add", **options)
    assert message in str(raised.value)


@pytest.mark.parametrize("directory", ["", 5])
def test_start_config_servable_directory_is_a_non_empty_str(directory):
    with pytest.raises(RuntimeError, match="Parameter 'servable_directory' should"):
        server.ServableStartConfig(directory, "add")


@pytest.mark.parametrize("device_type", ["None", "none", "NONE", None])
def test_device_type_none_in_any_case_means_none(compat_root, device_type):
    assert server.ServableStartConfig(compat_root["root"], "add", device_type=device_type).device_type is None


def test_two_configs_of_one_servable_must_agree(compat_root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(os.path.join(compat_root["root"], "add"), elsewhere / "add")
    try:
        with pytest.raises(
            RuntimeError, match="The servable directory of servable name add is different in multiple"
        ):
            server.start_servables(
                [
                    server.ServableStartConfig(compat_root["root"], "add"),
                    server.ServableStartConfig(str(elsewhere), "add"),
                ]
            )
        key = b"0123456789ABCDEF"
        with pytest.raises(
            RuntimeError, match="The dec key or dec mode of servable name add is different in multiple"
        ):
            server.start_servables(
                [
                    server.ServableStartConfig(compat_root["root"], "add", version_number=1),
                    server.ServableStartConfig(compat_root["root"], "add", version_number=1, dec_key=key),
                ]
            )
        assert server.runtime().status() == []  # nothing started
    finally:
        server.stop()


def test_version_0_is_the_newest_before_configs_are_merged(tmp_path):
    """As in MindSpore Serving, version 0 and the newest version's number are one version:
    their configs merge (device ids joined), and the merged config names the version."""
    from mindserve.compat.server import _merged

    root = write_servable(tmp_path, "add", "", versions=(1, 2))
    merged = _merged(
        [
            server.ServableStartConfig(root, "add", device_ids=1, version_number=0),
            server.ServableStartConfig(root, "add", device_ids=2, version_number=2),
            server.ServableStartConfig(root, "add", device_ids=3, version_number=1),
        ]
    )["add"]
    assert sorted(merged) == [1, 2]
    assert merged[2].version_number == 2 and merged[2].device_ids == (1, 2)
    assert merged[1].device_ids == (3,)
    # Without version directories, 0 stays 0 (the start then says no version exists).
    empty = write_servable(tmp_path / "empty", "add", "", versions=())
    assert list(_merged([server.ServableStartConfig(empty, "add")])["add"]) == [0]


def test_a_missing_version_is_a_runtime_error(compat_root):
    try:
        with pytest.raises(RuntimeError, match="version 9"):
            server.start_servables(server.ServableStartConfig(compat_root["root"], "add", version_number=9))
    finally:
        server.stop()


def test_start_servables_takes_configs(compat_root):
    with pytest.raises(RuntimeError, match="should be ServableStartConfig"):
        server.start_servables(["add"])


# -- errors as MindSpore Serving words and shapes them -------------------------------------------


def test_a_missing_input_is_reported_in_mindspore_serving_words(served):
    """MindSpore Serving looks for the method's inputs in order: x1 is missing, whatever
    other name the instance holds."""
    served("add")
    x = floats(1, 2, 3)
    result = Client("", "add", "add_common").infer([{"x3": x, "x2": x}])
    assert result["error"].startswith(
        "Cannot find input x1 in instance input , servable add, method add_common"
    )
    results = Client("", "add", "add_common").infer([{"x1": x, "x2": x}, {"x1": x}])
    assert results[0]["y"].tolist() == [2, 4, 6]
    assert results[1]["error"].startswith("Cannot find input x2 in instance input , servable add, method")


def test_a_model_handle_built_by_key_calls_the_declared_model(compat_root, tmp_path):
    """``register.model.Model("<file>")`` names a declared model by its key, as in MindSpore
    Serving; a key that no declared model has fails the call in its words."""
    config = """
from mindspore_serving.server import register
model = register.declare_model(model_file="tensor_add.mindir", model_format="MindIR")
by_key = register.model.Model("tensor_add.mindir")
unknown = register.model.Model("tensor_add_test.mindir")

def call_by_key(x1, x2):
    return by_key.call(x1, x2)

def call_unknown(x1, x2):
    return unknown.call(x1, x2)

@register.register_method(output_names="y")
def known(x1, x2):
    return register.add_stage(call_by_key, x1, x2, outputs_count=1)

@register.register_method(output_names="y")
def missing(x1, x2):
    return register.add_stage(call_unknown, x1, x2, outputs_count=1)
"""
    root = write_servable(tmp_path, "bykey", config)
    shutil.copy(os.path.join(compat_root["root"], "add", "1", "tensor_add.mindir"), tmp_path / "bykey" / "1")
    try:
        server.start_servables(server.ServableStartConfig(root, "bykey", device_ids=0))
        x = floats(1, 2, 3)
        (result,) = Client("", "bykey", "known").infer([{"x1": x, "x2": x}])
        assert result["y"].tolist() == [2, 4, 6]
        failed = Client("", "bykey", "missing").infer([{"x1": x, "x2": x}])
        assert "Model(tensor_add_test.mindir).call() failed: the model is not declared" in failed["error"]
    finally:
        server.stop()


def test_a_failing_stage_is_reported_in_mindspore_serving_words(served):
    served("values")
    results = Client("", "values", "failing").infer([{"x": floats(0)}, {"x": floats(1)}])
    assert results[0]["y"].tolist() == [0.0]
    assert results[1]["error"].startswith(
        "Call Function 'values.fails' Failed, method: 'failing', stage index(begin with 1): 1, error msg: bad value"
    )
    tagged = Client("", "values", "failing_tagged").infer([{"x": floats(1, 2, 3)}])
    assert tagged["error"].startswith(
        "Call Check Failed, method: 'failing_tagged', stage index(begin with 1): 2, error msg: bad value"
    )


def test_when_every_instance_fails_the_same_way_the_reply_is_one_error(served):
    served("values")
    same = Client("", "values", "failing").infer([{"x": floats(1)}, {"x": floats(2)}])
    assert isinstance(same, dict) and same["error"].endswith("error msg: bad value")
    different = Client("", "values", "illegal").infer([{"x": floats(0)}, {"x": floats(2)}])
    assert isinstance(different, list) and all("error" in r for r in different)


def test_set_max_enqueued_requests_limits_requests_in_flight(served):
    import threading
    import time

    from mindserve.compat.server.master import context

    gate = threading.Event()
    svc = mindserve.Servable("gated")

    @svc.stage
    def held(x):
        gate.wait(30)
        return x

    svc.add_method(lambda x: held(x), name="run")
    server.runtime().start(svc)
    client = Client("", "gated", "run")
    context.set_max_enqueued_requests(1)
    try:
        first = client.infer_async({"x": floats(1)})
        assert client.infer({"x": floats(2)}) == {
            "error": "Serving Error: enqueued requests count exceeds the limit 1"
        }
        gate.set()
        assert first.result()[0]["output"].tolist() == [1.0]
        deadline = time.monotonic() + 10  # the first request leaves just after its result
        while isinstance(client.infer({"x": floats(3)}), dict) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.infer({"x": floats(3)})[0]["output"].tolist() == [3.0]
    finally:
        context.set_max_enqueued_requests(10000)
        gate.set()
    for bad, message in ((0, "should be >= 1"), (True, "should be int"), ("5", "should be int")):
        with pytest.raises(RuntimeError, match=message):
            server.master.context.set_max_enqueued_requests(bad)


def test_an_ssl_config_file_that_is_missing_fails_the_grpc_server_as_in_mindspore_serving():
    config = server.SSLConfig(
        certificate="missing-cert.pem", private_key="missing-key.pem", custom_ca=None, verify_client=False
    )
    try:
        with pytest.raises(FileNotFoundError, match=r"missing-cert\.pem"):
            server.start_grpc_server("127.0.0.1:5500", ssl_config=config)
    finally:
        server.stop()


@pytest.mark.parametrize(
    "address, message",
    [
        ("invalid address", "The format of the Serving gRPC address 'invalid address' is illegal"),
        (
            "127.0.0.1:5000000",
            "The port of the Serving gRPC address '127.0.0.1:5000000' is out of legal range",
        ),
        ("127.0.0.1:", "Missing ip or port of the Serving gRPC address '127.0.0.1:'"),
        ("unix:", "Serving Error: Empty grpc server unix domain socket address"),
        (
            "127.0.256.1:5000",
            "Serving gRPC server start failed, create server failed, address 127.0.256.1:5000",
        ),
        ("127.0.0.1:5000:5000", "create server failed, address 127.0.0.1:5000:5000"),
    ],
)
def test_grpc_server_addresses_are_checked_in_mindspore_servings_words(address, message):
    try:
        with pytest.raises(RuntimeError, match=re.escape(message)):
            server.start_grpc_server(address)
    finally:
        server.stop()


def test_the_grpc_servers_address_is_held_until_stop():
    """Nothing listens, but as in MindSpore Serving a port in use fails the gRPC server, a
    second one fails until stop(), and the RESTful server cannot take its port."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(RuntimeError, match=f"create server failed, address {address}"):
            server.start_grpc_server(address)
    with socket.create_server(("127.0.0.1", 0)) as free:
        port = free.getsockname()[1]
    try:
        server.start_grpc_server(f"127.0.0.1:{port}")
        with pytest.raises(RuntimeError, match="Serving Error: Serving gRPC server is already running"):
            server.start_grpc_server("127.0.0.1:1")
        if importlib.util.find_spec("uvicorn") is not None:
            with pytest.raises(RuntimeError, match=f"bind to the socket address 0.0.0.0:{port} failed"):
                server.start_restful_server(f"0.0.0.0:{port}")
    finally:
        server.stop()
    server.start_grpc_server(f"127.0.0.1:{port}")  # released by stop()
    server.stop()


# -- model contexts and device infos: readable, checked as MindSpore Serving checks them ----------


def test_contexts_and_device_infos_are_readable():
    from mindserve.compat import register

    context = register.Context(thread_num=4, thread_affinity_core_list=[0, 1], enable_parallel=True)
    cpu = register.CPUDeviceInfo(precision_mode="fp16")
    ascend = register.AscendDeviceInfo(input_format="NCHW", precision_mode="allow_mix_precision")
    context.append_device_info(cpu)
    context.append_device_info(ascend)
    assert (context.model_context.thread_num, context.model_context.enable_parallel) == (4, 1)
    assert context.model_context.thread_affinity_core_list == [0, 1]
    assert cpu.context_map == {"precision_mode": "fp16", "device_type": "cpu"}
    assert ascend.context_map == {
        "input_format": "NCHW",
        "precision_mode": "allow_mix_precision",
        "device_type": "ascend",
    }
    assert context.model_context.device_list == [cpu.context_map, ascend.context_map]
    assert register.GpuOptions(precision_mode="origin").context.model_context.device_list == [
        {"precision_mode": "origin", "device_type": "gpu"}
    ]
    assert register.AclOptions(op_select_impl_mode="high_precision").context.device_types == ["ascend"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: r.Context(threads=2), "Set context failed, unsupported option threads"),
        (lambda r: r.Context(thread_num=0), "Parameter 'thread_num' should be >= 1"),
        (lambda r: r.Context(enable_parallel=1), "Parameter 'enable_parallel' should be bool"),
        (
            lambda r: r.Context(thread_affinity_core_list=[1, 1]),
            "The item value '1' in parameter 'thread_affinity_core_list' should not be repeated",
        ),
        (
            lambda r: r.CPUDeviceInfo(precision_mode="int8"),
            "Cpu device info 'precision_mode' can only be 'origin', 'fp16'. given 'int8'",
        ),
        (lambda r: r.GPUDeviceInfo(mode="fp16"), "Set gpu device info failed, unsupported option mode"),
        (
            lambda r: r.AscendDeviceInfo(input_format="XY"),
            "Ascend device info 'input_format' can only be 'ND', 'NCHW', 'NHWC', 'CHWN', 'NC1HWC0', or 'NHWC1C0', actually given 'XY'",
        ),
        (lambda r: r.AscendDeviceInfo(insert_op_cfg_path=3), "Parameter 'insert_op_cfg_path' should be str"),
        (lambda r: r.AscendDeviceInfo(aipp="x"), "Set ascend device info failed, unsupported parameter aipp"),
        (
            lambda r: r.Context().append_device_info("cpu"),
            "Parameter 'device_info' should instance of CPUDeviceInfo",
        ),
    ],
)
def test_bad_contexts_and_device_infos_are_refused_in_mindspore_serving_words(make, message):
    from mindserve.compat import register

    with pytest.raises(RuntimeError) as raised:
        make(register)
    assert message in str(raised.value)


def test_a_device_type_is_appended_once():
    from mindserve.compat import register

    context = register.Context()
    context.append_device_info(register.CPUDeviceInfo())
    with pytest.raises(RuntimeError, match="Device info of type cpu has already been appended"):
        context.append_device_info(register.CPUDeviceInfo(precision_mode="fp16"))


# -- the legacy call_preprocess / call_servable / call_postprocess rules ------------------------

LEGACY = """
import numpy as np
from mindspore_serving.server import register

model = register.declare_model(model_file="tensor_add.mindir", model_format="MindIR")

def pre(x1, x2):
    return x1, x2

def post(y):
    return y

@register.register_method(output_names=["y"])
def method(x1, x2):
{body}
"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "    x1, x2 = register.call_preprocess(pre, x1, x2)\n    x1, x2 = register.call_preprocess_pipeline(pre, x1, x2)\n"
            "    y = register.call_servable(x1, x2)\n    return y",
            "Check failed in method 'method', call_preprocess or call_preprocess_pipeline should not be invoked more than once",
        ),
        (
            "    y = register.call_servable(x1, x2)\n    x1, x2 = register.call_preprocess(pre, x1, x2)\n    return y",
            "Check failed in method 'method', call_servable should be invoked after call_preprocess",
        ),
        (
            "    y = register.call_servable(x1, x2)\n    y = register.call_postprocess(post, y)\n"
            "    z = register.call_servable(x1, x2)\n    return y",
            "Check failed in method 'method', call_servable should not be invoked more than once",
        ),
        (
            "    y = register.call_servable(x1, x2)\n    y = register.call_postprocess(post, y)\n"
            "    y = register.call_postprocess_pipeline(post, y)\n    return y",
            "call_postprocess or call_postprocess_pipeline should not be invoked more than once",
        ),
        (
            "    x1, x2 = register.call_preprocess(pre, x1, x2)\n    return x1",
            "Not find the invoke of 'call_servable'",
        ),
        (
            "    y = register.call_servable(x1, x2)\n    if True:\n        y = register.call_postprocess(post, y)\n    return y",
            "Failed to parse method 'method', complex statements such as conditions and loops are not supported in "
            "register_method when the interface 'call_servable' is used",
        ),
        (
            "    y = register.call_servable(x1, x2)\n    z = np.add(y, 1)\n    return y",
            "complex statements such as conditions and loops are not supported",
        ),
    ],
)
def test_legacy_calls_follow_mindspore_servings_rules(tmp_path, body, message):
    write_servable(tmp_path, "legacy", LEGACY.format(body=body))
    with pytest.raises(LoadError) as raised:
        load_servable(str(tmp_path), "legacy")
    assert message in str(raised.value)


COUNTS = """
from mindspore_serving.server import register

model = register.declare_model(model_file="addmul.mindir", model_format="MindIR")

@register.register_method(output_names=["y"])
def method(x, y):
{body}
"""


@pytest.mark.warm_up  # outputs are checked by the warm-up run, which MINDSERVE_WARM_UP=0 skips
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "    return register.add_stage(model, x, y, outputs_count=1)",
            "The outputs count 1 in register_method not equal to the count 2 defined in model, model info: "
            "addmul.mindir, subgraph: 0",
        ),
        (
            "    a, b = register.add_stage(model, x, outputs_count=2)\n    return a",
            "The inputs count 1 in register_method not equal to the count 2 defined in model, model info: "
            "addmul.mindir, subgraph: 0",
        ),
    ],
)
def test_model_input_and_output_counts_are_checked_at_start_in_mindspore_servings_words(
    compat_root, tmp_path, body, message
):
    write_servable(tmp_path, "counts", COUNTS.format(body=body))
    shutil.copy(os.path.join(compat_root["root"], "multi", "1", "addmul.mindir"), tmp_path / "counts" / "1")
    try:
        with pytest.raises(LoadError) as raised:
            server.start_servables(server.ServableStartConfig(str(tmp_path), "counts"))
        assert message in str(raised.value)
    finally:
        server.stop()


DECLARE = """
from mindspore_serving.server import register
model = register.declare_model({arguments})
"""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            "model_file=5, model_format='MindIR'",
            "Parameter 'model_file' should be str or tuple/list of str, but actually <class 'int'>",
        ),
        (
            "model_file=['a.mindir', ''], model_format='MindIR'",
            "The item of parameter 'model_file' should not be empty str",
        ),
        (
            "model_file=['a.mindir', 'a.mindir'], model_format='MindIR'",
            "The item value 'a.mindir' in parameter 'model_file' should not be repeated",
        ),
        ("model_file=[], model_format='MindIR'", "Declare model failed, model files size cannot be 0"),
        (
            "model_file='a.mindir', model_format='onnx'",
            "model format can only be OM, MindIR or MindIR_Lite, case ignored",
        ),
        (
            "model_file='a.mindir', model_format='MindIR', with_batch_dim=1",
            "Parameter 'with_batch_dim' should be bool, but actually <class 'int'>",
        ),
        (
            "model_file='a.mindir', model_format='MindIR', context='cpu'",
            "Parameter 'context' should be Context, but gotten <class 'str'>",
        ),
        (
            "model_file='a.mindir', model_format='MindIR', options=1",
            "Parameter 'options' should be None, GpuOptions or AclOptions, but gotten <class 'int'>",
        ),
    ],
)
def test_declare_model_checks_its_arguments_in_mindspore_servings_words(tmp_path, arguments, message):
    write_servable(tmp_path, "declared", DECLARE.format(arguments=arguments), versions=())
    with pytest.raises(LoadError) as raised:
        load_servable(str(tmp_path), "declared")
    assert message in str(raised.value)


REGISTER = """
from mindspore_serving.server import register

def identity(x):
    return x

@register.register_method(output_names={names})
def method({parameters}):
    return {returned}
"""


@pytest.mark.parametrize(
    ("names", "parameters", "returned", "message"),
    [
        ("['y', 'y']", "x", "x", "The item value 'y' in parameter 'output_names' should not be repeated"),
        (
            "5",
            "x",
            "x",
            "Parameter 'output_names' should be str or tuple/list of str, but actually <class 'int'>",
        ),
        ("['y']", "*x", "x", "'method' input x cannot be VAR_POSITIONAL !"),
        ("['y']", "**x", "x", "'method' input x cannot be VAR_KEYWORD !"),
        (
            "['y', 'z']",
            "x",
            "register.add_stage(identity, x, outputs_count=1)",
            "Method return output size 1 not match registered 2",
        ),
        (
            "['y', 'z']",
            "x",
            "[*register.add_stage(identity, x, outputs_count=1)]",
            "cannot unpack non-iterable _TensorDef object",
        ),
    ],
)
def test_register_method_checks_in_mindspore_servings_words(tmp_path, names, parameters, returned, message):
    write_servable(
        tmp_path,
        "registered",
        REGISTER.format(names=names, parameters=parameters, returned=returned),
        versions=(),
    )
    with pytest.raises(LoadError) as raised:
        load_servable(str(tmp_path), "registered")
    assert message in str(raised.value)


def test_a_config_directory_or_file_that_is_missing_is_reported_in_mindspore_servings_words(tmp_path):
    with pytest.raises(
        LoadError, match=r"Check servable config failed, directory '.*nothing' not exist, servable "
    ):
        load_servable(str(tmp_path), "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        LoadError, match=r"Check servable config failed, file '.*servable_config.py' not exist, "
    ):
        load_servable(str(tmp_path), "empty")


def test_a_method_returning_something_else_than_placeholders_is_refused_in_mindspore_servings_words(tmp_path):
    write_servable(
        tmp_path, "returns", REGISTER.format(names="['y']", parameters="x", returned="1"), versions=()
    )
    with pytest.raises(
        LoadError, match="Each value returned is a placeholder for data and must come from the method"
    ):
        load_servable(str(tmp_path), "returns")


def test_a_model_used_with_other_counts_is_refused_in_mindspore_servings_words(tmp_path, compat_root):
    body = "    a = register.add_stage(model, x, y, outputs_count=2)\n    b = register.add_stage(model, x, outputs_count=2)\n    return a"
    write_servable(tmp_path, "counts", COUNTS.format(body=body))
    with pytest.raises(
        LoadError,
        match=r"RegisterInputOutputInfo failed, inputs count 1 not match old count 2, model: addmul\.mindir",
    ):
        load_servable(str(tmp_path), "counts")
    body = "    a = register.add_stage(model, x, y, outputs_count=2)\n    b = register.add_stage(model, x, y, outputs_count=3)\n    return a"
    (tmp_path / "counts" / "servable_config.py").write_text(COUNTS.format(body=body))
    with pytest.raises(
        LoadError,
        match=r"RegisterInputOutputInfo failed, outputs count 3 not match old count 2, model: addmul\.mindir",
    ):
        load_servable(str(tmp_path), "counts")


def test_add_stage_batch_size_is_checked_in_mindspore_servings_words(tmp_path):
    returned = "register.add_stage(identity, x, outputs_count=1, batch_size=-1)"
    write_servable(
        tmp_path, "sized", REGISTER.format(names="['y']", parameters="x", returned=returned), versions=()
    )
    with pytest.raises(LoadError, match="Parameter 'batch_size' should be >= 0"):
        load_servable(str(tmp_path), "sized")


def test_start_failures_are_worded_as_mindspore_serving_words_them(compat_root, tmp_path):
    shutil.copytree(os.path.join(compat_root["root"], "add"), tmp_path / "add")
    try:
        with pytest.raises(LoadError) as raised:
            server.start_servables(server.ServableStartConfig(str(tmp_path), "add", version_number=2))
        assert "There is no specified version directory of models, specified version number: 2" in str(
            raised.value
        )
        shutil.rmtree(tmp_path / "add" / "1")
        (tmp_path / "add" / "0").mkdir()  # "0/" is no version, as in MindSpore Serving
        with pytest.raises(LoadError) as raised:
            server.start_servables(server.ServableStartConfig(str(tmp_path), "add"))
        assert "There is no valid version directory of models" in str(raised.value)
        (tmp_path / "add" / "1").mkdir()
        with pytest.raises(LoadError) as raised:
            server.start_servables(server.ServableStartConfig(str(tmp_path), "add"))
        assert str(raised.value).startswith("Load model failed, servable directory: ")
        assert "tensor_add.mindir" in str(raised.value)
    finally:
        server.stop()


def test_a_config_without_methods_is_worded_as_mindspore_serving_words_it(tmp_path):
    write_servable(tmp_path, "nomethod", "from mindspore_serving.server import register\n", versions=())
    with pytest.raises(LoadError, match="There is no method registered for servable"):
        load_servable(str(tmp_path), "nomethod")

"""The runtime's lifecycle, lookups and versions (Python callables as models)."""

import os
import re
import threading
import time

import pytest

import mindserve
from mindserve import (
    MethodNotFoundError,
    RuntimeClosedError,
    ServableNotFoundError,
    VersionNotFoundError,
)
from waiting import wait_until


def echo_servable(name="echo", directory=None, tag="v"):
    svc = mindserve.Servable(name, directory=directory)
    stamp = svc.add_stage(lambda x: f"{tag}:{x}", name="stamp")
    svc.add_method(lambda x: stamp(x), name="say", outputs="text")
    return svc


def test_servable_without_model_needs_no_version_directory(rt):
    info = rt.start(echo_servable(directory="/nonexistent/dir"))
    assert info.version == 1 and info.models == () and info.device is None
    assert rt.infer("echo", "say", [{"x": 1}]) == [{"text": "v:1"}]


def test_unknown_names_list_what_is_available(rt):
    rt.start(echo_servable())
    with pytest.raises(
        ServableNotFoundError, match=r"no servable named 'nope' is running; running: \['echo'\]"
    ):
        rt.infer("nope", "say", [])
    with pytest.raises(
        MethodNotFoundError, match=r"servable 'echo' has no method 'shout'; its methods: \['say'\]"
    ):
        rt.infer("echo", "shout", [])
    with pytest.raises(VersionNotFoundError, match=r"is not running version 3; running: \[1\]"):
        rt.infer("echo", "say", [], version=3)
    with pytest.raises(VersionNotFoundError, match="a version must be an int >= 1, or 0 for the newest"):
        rt.infer("echo", "say", [], version=-1)
    assert issubclass(ServableNotFoundError, LookupError)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"method": []}, "a method is named by a str; got list"),
        ({"method": 1}, "a method is named by a str; got int"),
        ({"version": "1"}, "a version must be an int >= 1, or 0 for the newest; got '1'"),
        ({"version": 1.0}, "a version must be an int >= 1, or 0 for the newest; got 1.0"),
    ],
)
def test_arguments_of_a_wrong_type_are_argument_type_errors(rt, arguments, message):
    """Issue 20, item 15: as docs/errors.md says, not TypeError, MethodNotFoundError or
    VersionNotFoundError."""
    import asyncio

    rt.start(echo_servable())
    call = {"method": "say", **arguments}
    method, version = call["method"], call.get("version", 0)
    for run in (
        lambda: rt.infer("echo", method, [{"x": 1}], version=version),
        lambda: rt.infer_async("echo", method, [{"x": 1}], version=version),
        lambda: asyncio.run(rt.ainfer("echo", method, [{"x": 1}], version=version)),
    ):
        with pytest.raises(mindserve.ArgumentTypeError, match=re.escape(message)):
            run()
    if "version" in arguments:
        for run in (
            lambda: rt.update("echo", version=version),
            lambda: rt.batch_log("echo", version=version),
        ):
            with pytest.raises(mindserve.ArgumentTypeError, match=re.escape(message)):
                run()


def test_a_numpy_float32_timeout_is_taken_like_a_float(rt):
    import numpy as np

    rt.start(echo_servable())
    for timeout in (np.float32(1.0), np.float64(1.0), np.int64(2), 1, 1.5):
        assert rt.infer("echo", "say", [{"x": 1}], timeout=timeout) == [{"text": "v:1"}]
    with pytest.raises(mindserve.ArgumentTypeError, match="timeout must be a number of seconds or None"):
        rt.infer("echo", "say", [{"x": 1}], timeout=np.bool_(True))


def test_instances_must_be_a_list(rt):
    rt.start(echo_servable())
    with pytest.raises(
        mindserve.InvalidInputError, match=r"instances must be a list of dicts; got dict. Hint"
    ):
        rt.infer("echo", "say", {"x": 1})


def test_starting_the_same_name_again_replaces_it(rt):
    """Re-running a notebook cell that defines and starts a servable just works."""
    rt.start(echo_servable(tag="old"))
    rt.start(echo_servable(tag="new"))
    assert rt.infer("echo", "say", [{"x": 1}]) == [{"text": "new:1"}]
    assert [(i.name, i.version) for i in rt.status()] == [("echo", 1)]


def test_starting_a_different_servable_under_a_running_name_is_refused(rt, tmp_path):
    """Issue 20, item 14: another servable (another directory, other models) does not replace
    a running one silently; replace=True or update() says so."""
    rt.start(echo_servable())
    other = echo_servable(directory=str(tmp_path), tag="other")
    model = other.model(lambda x: x, name="identity")
    other.add_method(lambda x: model(x), name="same")
    with pytest.raises(
        mindserve.InvalidArgumentError, match=r"already running.*Hint: .*replace=True.*update"
    ) as caught:
        rt.start(other)
    assert "directory" in str(caught.value) and "models" in str(caught.value)
    assert rt.infer("echo", "say", [{"x": 1}]) == [{"text": "v:1"}], "the running one still serves"
    assert rt.servable_status("echo").last_error is None
    rt.start(other, replace=True)
    assert rt.infer("echo", "same", [{"x": 2}]) == [{"output": 2}]
    rt.update(echo_servable(tag="back"))
    assert rt.infer("echo", "say", [{"x": 3}]) == [{"text": "back:3"}]


def test_start_takes_replace_as_true_or_false(rt):
    with pytest.raises(mindserve.ArgumentTypeError, match="replace must be True or False; got 1"):
        rt.start(echo_servable(), replace=1)


def test_definition_is_a_snapshot_at_start(rt):
    svc = echo_servable()
    rt.start(svc)
    stamp = svc.stages["stamp"]
    svc.add_method(lambda x: stamp(x), name="later")
    with pytest.raises(MethodNotFoundError):
        rt.infer("echo", "later", [])


def test_servable_object_can_name_itself(rt):
    svc = echo_servable()
    rt.start(svc)
    assert rt.infer(svc, "say", [{"x": 2}]) == [{"text": "v:2"}]


def test_status_lists_methods_and_models(rt):
    svc = echo_servable()
    model = svc.model(lambda x: x, name="identity")
    svc.add_method(lambda x: model(x), name="same")
    info = rt.start(svc)
    assert [(m.name, m.inputs, m.outputs) for m in info.methods] == [
        ("say", ("x",), ("text",)),
        ("same", ("x",), ("output",)),
    ]
    (model_info,) = info.models
    assert (model_info.name, model_info.kind, model_info.fixed_batch_size) == ("identity", "callable", None)
    assert rt.status() == [info]
    assert "echo v1" in repr(rt)


def test_stop_one_servable_leaves_others(rt):
    rt.start(echo_servable("a"))
    rt.start(echo_servable("b"))
    rt.stop("a")
    assert [i.name for i in rt.status()] == ["b"]
    with pytest.raises(ServableNotFoundError):
        rt.infer("a", "say", [])
    with pytest.raises(ServableNotFoundError):
        rt.stop("a")
    with pytest.raises(VersionNotFoundError, match="not running version 9"):
        rt.stop("b", version=9)
    rt.stop("b", version=1)
    assert rt.status() == []


def test_stop_everything(rt):
    rt.start(echo_servable("a"))
    rt.start(echo_servable("b"))
    rt.stop()
    assert rt.status() == []


def test_closed_runtime_refuses_use():
    runtime = mindserve.Runtime()
    runtime.start(echo_servable())
    runtime.close()
    runtime.close()
    for call in (
        lambda: runtime.infer("echo", "say", []),
        lambda: runtime.start(echo_servable()),
        lambda: runtime.stop(),
        lambda: runtime.__enter__(),
    ):
        with pytest.raises(RuntimeClosedError, match="this Runtime is closed"):
            call()


def test_version_directories_pick_the_newest(rt, tmp_path):
    for version in ("1", "2", "10", "007", "notes"):
        os.makedirs(tmp_path / version)
    svc = echo_servable(directory=tmp_path)
    assert rt.start(svc).version == 10
    assert rt.start(svc, version=2).version == 2
    with pytest.raises(VersionNotFoundError, match=r"has no version 3 in .*; available: \[1, 2, 10\]"):
        rt.start(svc, version=3)


def test_servable_with_no_directory_is_version_one(rt):
    with pytest.raises(
        VersionNotFoundError, match="has no directory, so its only version is 1; got version 2"
    ):
        rt.start(echo_servable(), version=2)
    assert rt.start(echo_servable(), version=1).version == 1


def test_a_servable_needs_a_method(rt):
    with pytest.raises(mindserve.DefinitionError, match="has no methods"):
        rt.start(mindserve.Servable("empty"))


def test_start_takes_a_servable(rt):
    with pytest.raises(TypeError, match=r"takes a mindserve\.Servable; got str"):
        rt.start("echo")


def test_bad_device_target():
    with pytest.raises(
        mindserve.DeviceError, match=r"device_target must be one of \['Ascend', 'CPU', 'GPU'\]"
    ):
        mindserve.Runtime(device_target="TPU")
    with pytest.raises(ValueError, match="device_id must be an int >= 0"):
        mindserve.Runtime(device_id=-1)


def test_stop_lets_running_requests_finish(rt):
    """A request already inside a servable completes after the servable is stopped."""
    entered, release = threading.Event(), threading.Event()
    svc = mindserve.Servable("slow")

    @svc.stage
    def wait(x):
        entered.set()
        release.wait(timeout=30)
        return x

    svc.add_method(lambda x: wait(x), name="m")
    rt.start(svc)
    results = []
    caller = threading.Thread(target=lambda: results.append(rt.infer("slow", "m", [{"x": 5}])))
    caller.start()
    assert entered.wait(timeout=30)
    rt.stop("slow")
    release.set()
    caller.join(timeout=30)
    assert results == [[{"output": 5}]]
    with pytest.raises(ServableNotFoundError):
        rt.infer("slow", "m", [{"x": 5}])


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # no thread may die
@pytest.mark.parametrize("timeout", [float("inf"), 1e10, 1e300])
def test_an_endless_timeout_means_no_deadline(rt, timeout):
    import asyncio

    svc = mindserve.Servable("forever")
    svc.add_method(lambda x: x, name="same")
    rt.start(svc)
    assert rt.infer("forever", "same", [{"x": 1}], timeout=timeout) == [{"output": 1}]
    assert rt.infer_async("forever", "same", [{"x": 2}], timeout=timeout).result(10) == [{"output": 2}]
    assert asyncio.run(rt.ainfer("forever", "same", [{"x": 3}], timeout=timeout)) == [{"output": 3}]
    from mindserve._calls import ALARM

    time.sleep(0.2)  # the deadline thread has looked at the calls' deadlines by now
    assert ALARM._thread is None or ALARM._thread.is_alive()


@pytest.mark.parametrize(
    ("call", "builtin"),
    [
        (lambda rt, svc: rt.infer("args", "same", [{"x": 1}], timeout="soon"), TypeError),
        (lambda rt, svc: rt.infer("args", "same", [{"x": 1}], timeout=-1), ValueError),
        (lambda rt, svc: rt.infer("args", "same", [{"x": 1}], timeout=float("nan")), ValueError),
        (lambda rt, svc: rt.infer(5, "same", [{"x": 1}]), TypeError),
        (lambda rt, svc: rt.start("args"), TypeError),
        (lambda rt, svc: rt.start(svc, watch=True), ValueError),
        (lambda rt, svc: rt.start(svc, workers=-2), ValueError),
        (lambda rt, svc: rt.start(svc, device_ids="0"), ValueError),
        (lambda rt, svc: rt.add_listener(5), TypeError),
        (lambda rt, svc: rt.remove_listener(print), ValueError),
        (lambda rt, svc: rt.add_observer(5), TypeError),
        (lambda rt, svc: mindserve.Runtime(device_id=-1), ValueError),
        (lambda rt, svc: mindserve.Runtime(async_workers=0), ValueError),
        (lambda rt, svc: mindserve.Runtime(warm_up="yes"), ValueError),
        (lambda rt, svc: mindserve.Runtime(observers=5), TypeError),
    ],
)
def test_bad_arguments_get_mindserve_errors_that_are_also_the_fitting_builtin(rt, call, builtin):
    svc = mindserve.Servable("args")
    svc.add_method(lambda x: x, name="same")
    rt.start(svc)
    with pytest.raises(mindserve.MindServeError) as raised:
        call(rt, svc)
    assert isinstance(raised.value, builtin)


def test_messages_count_in_good_english(rt):
    svc = mindserve.Servable("english")

    @svc.stage(outputs=2)
    def one(x):
        return (x,)

    svc.add_method(lambda x: one(x), name="r", outputs=["a", "b"])
    rt.start(svc)
    (error,) = rt.infer("english", "r", [{"x": 1}], return_exceptions=True)
    assert "it returned 1 value" in str(error) and "1 values" not in str(error)
    from mindserve._errors import counted

    assert (counted(1, "instance"), counted(2, "instance"), counted(0, "value")) == (
        "1 instance",
        "2 instances",
        "0 values",
    )


def _batched_servable(directory):
    """A servable with a batched callable model (a scheduler thread) in a version directory."""
    os.makedirs(os.path.join(directory, "1"), exist_ok=True)
    svc = mindserve.Servable("batched", directory=directory)
    double = svc.model(lambda x: x * 2, name="double", batching=mindserve.Batching(max_batch_size=4))
    svc.add_method(lambda x: double(x), name="run", outputs="y")
    return svc


def _wait_ended(threads, seconds=10.0):
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    return [t.name for t in threads if t.is_alive()]


def test_an_unreachable_runtime_is_closed_with_a_warning_naming_the_fix(tmp_path):
    import gc
    import weakref

    import numpy as np

    svc = _batched_servable(str(tmp_path))
    before = set(threading.enumerate())
    events = []
    rt = mindserve.Runtime(warm_up=False)
    rt.add_listener(events.append)
    rt.start(svc, watch=True, poll_interval=0.05)
    rt.infer_async("batched", "run", [{"x": np.ones(3)}]).result(10)
    assert rt.infer("batched", "run", [{"x": np.ones(3)}])[0]["y"].tolist() == [2, 2, 2]
    ref = weakref.ref(rt)
    started = [t for t in threading.enumerate() if t not in before]
    assert started  # a scheduler, a watcher and an async worker at least
    with pytest.warns(mindserve.RuntimeNotClosedWarning, match=r"with mindserve.Runtime\(\)|close\(\)"):
        del rt
        gc.collect()
    assert ref() is None

    def unloaded():
        return [e.kind for e in events].count(mindserve.EventKind.UNLOADED)

    wait_until(lambda: unloaded() >= 1)  # the closing runs on a thread of its own
    assert _wait_ended(started) == []
    assert unloaded() == 1


def test_the_not_closed_warning_points_at_the_users_line(tmp_path):
    """Issue 20, item 17: not at weakref.py."""
    import gc
    import inspect
    import warnings

    def drop():
        rt = mindserve.Runtime(warm_up=False)
        rt.start(_batched_servable(str(tmp_path)))
        line = inspect.currentframe().f_lineno + 1
        del rt
        return line

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mindserve.RuntimeNotClosedWarning)
        dropped = drop()
        collected = inspect.currentframe().f_lineno + 1
        gc.collect()
    (warning,) = [w for w in caught if issubclass(w.category, mindserve.RuntimeNotClosedWarning)]
    assert (warning.filename, warning.lineno) in ((__file__, dropped), (__file__, collected))


def test_the_first_start_logs_a_load_not_a_swap(rt, caplog):
    """Issue 20, item 17."""
    import logging

    with caplog.at_level(logging.INFO, logger="mindserve"):
        rt.start(echo_servable())
    messages = [r.getMessage() for r in caplog.records]
    assert "servable 'echo' version 1 loaded" in messages
    assert not any("swapped" in m for m in messages), messages


def test_a_servable_infos_repr_is_short(rt):
    """Issue 20, item 17: one line, not every spec of every model."""
    svc = echo_servable()
    for k in range(20):
        svc.model(lambda x: x, name=f"m{k}")
    svc.add_method(lambda x: x, name="other")
    info = rt.start(svc)
    text = repr(info)
    assert len(text) < 200 and "\n" not in text, text
    assert text.startswith("ServableInfo(") and "'echo'" in text and "version=1" in text
    assert "20 models" in text and "2 methods" in text


def test_rerunning_a_notebook_cell_leaves_one_runtime_running(tmp_path):
    import gc
    import warnings

    svc = _batched_servable(str(tmp_path))
    before = set(threading.enumerate())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mindserve.RuntimeNotClosedWarning)
        for _ in range(5):  # the cell: rt = mindserve.Runtime(); rt.start(svc)
            rt = mindserve.Runtime(warm_up=False)
            rt.start(svc)
            rt.infer("batched", "run", [{"x": 1}])
        gc.collect()
    try:
        alive = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        schedulers = [t for t in alive if "double" in t.name]
        assert len(schedulers) <= 1, [t.name for t in alive]
    finally:
        rt.close()


def test_a_closed_runtime_left_unreachable_warns_nothing(tmp_path):
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", mindserve.RuntimeNotClosedWarning)
        with mindserve.Runtime(warm_up=False) as rt:
            rt.start(_batched_servable(str(tmp_path)))
        del rt
        gc.collect()


def test_close_documents_its_grace_period():
    assert "grace" in mindserve.Runtime.close.__doc__ and "30" in mindserve.Runtime.close.__doc__


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"worker_output": "w{index}.log"}, mindserve.InvalidArgumentError, "runs in this process"),
        ({"workers": 1, "worker_output": "w{rank}.log"}, mindserve.InvalidArgumentError, "no pattern of"),
        ({"workers": 1, "worker_output": 7}, mindserve.ArgumentTypeError, "a file name pattern"),
    ],
)
def test_worker_output_is_checked_before_any_worker_starts(rt, kwargs, error, message):
    svc = mindserve.Servable("out")
    svc.add_method(lambda x: x, name="same")
    with pytest.raises(error, match=message):
        rt.start(svc, **kwargs)

"""Several versions at once, hot update, events, the directory watcher and draining.

Python callables stand in for models here; tests/integration/test_hot_update_mindspore.py swaps real
MindIR versions under load.
"""

import gc
import os
import threading
import weakref

import pytest

import mindserve
from mindserve import LoadError, RuntimeClosedError, VersionNotFoundError
from mindserve._serving.versions import Watcher
from waiting import wait_until


def versioned(directory, name="v", gate=None, entered=None):
    """A servable whose answer names the version directory it was loaded from."""
    svc = mindserve.Servable(name, directory=directory)

    def which(x):
        if gate is not None:
            entered.set()
            gate.wait(30)
        return x

    stage = svc.add_stage(which, name="which")
    svc.add_method(lambda x: stage(x), name="f", outputs="y")
    return svc


@pytest.fixture
def tree(tmp_path):
    for version in (1, 2, 3):
        os.makedirs(tmp_path / "v" / str(version))
    return str(tmp_path / "v")


@pytest.fixture
def events(rt):
    seen = []
    rt.add_listener(lambda e: seen.append((e.kind, e.servable, e.version)))
    return seen


def test_several_versions_pinning_and_stopping_one(rt, tree):
    svc = versioned(tree)
    rt.start(svc, version=1)
    assert rt.load(svc, version=2).is_default
    rt.load(svc, version=3)
    status = rt.servable_status("v")
    assert status.default_version == 3 and [i.version for i in status.versions] == [1, 2, 3]
    assert [i.is_default for i in rt.status()] == [False, False, True]
    assert rt.infer("v", "f", [{"x": 1}], version=2) == [{"y": 1}]
    rt.stop("v", version=3)
    assert rt.servable_status("v").default_version == 2
    with pytest.raises(VersionNotFoundError, match=r"not running version 3; running: \[1, 2\]"):
        rt.infer("v", "f", [{"x": 1}], version=3)
    rt.stop("v", version=1)
    assert [i.version for i in rt.status()] == [2]


def test_update_swaps_the_default_and_unloads_the_old_version(rt, tree, events):
    svc = versioned(tree)
    rt.start(svc, version=1)
    old = weakref.ref(rt._hosted["v"].versions[1])
    info = rt.update("v")
    assert info.version == 3 and info.is_default
    assert [i.version for i in rt.status()] == [3]
    assert events == [
        ("loaded", "v", 1),
        ("swapped", "v", 1),
        ("loaded", "v", 3),
        ("swapped", "v", 3),
        ("unloaded", "v", 1),
    ]
    gc.collect()
    assert old() is None, "the old version's memory is released"


def test_update_keeps_explicitly_loaded_versions(rt, tree):
    svc = versioned(tree)
    rt.start(svc, version=1)
    rt.load(svc, version=2)
    rt.update("v", version=3)
    assert [i.version for i in rt.status()] == [1, 3]


def test_rollback_with_update(rt, tree):
    svc = versioned(tree)
    rt.start(svc, version=3)
    rt.update("v", version=1)
    assert [(i.version, i.is_default) for i in rt.status()] == [(1, True)]


def test_rollback_makes_the_older_version_the_default(rt, tmp_path):
    """A regression test (an old bug): rolling back to version 1 while version 3 is loaded beside
    the default 2 makes 1 the default; 3 is unloaded, 2 stays loaded."""
    for v in (1, 2, 3):
        os.makedirs(tmp_path / "v" / str(v))
    svc = versioned(str(tmp_path / "v"))
    rt.start(svc, version=2)
    rt.load(svc, version=3)
    info = rt.update("v", version=1)
    assert info.is_default and info.version == 1
    status = rt.servable_status("v")
    assert status.default_version == 1
    assert [i.version for i in status.versions] == [1, 2]
    assert [i.version for i in rt.status() if i.is_default] == [1]


def test_failed_update_keeps_serving_and_is_reported(rt, tree, events):
    svc = versioned(tree)
    rt.start(svc, version=2)
    with pytest.raises(VersionNotFoundError):
        rt.update("v", version=7)
    broken = mindserve.Servable("v", directory=tree)
    model = broken.model("missing.mindir")
    broken.add_method(lambda x: model(x), name="f")
    with pytest.raises(LoadError, match=r"missing\.mindir' does not exist"):
        rt.update(broken, version=3)
    status = rt.servable_status("v")
    assert status.default_version == 2
    assert isinstance(status.last_error, LoadError) and status.last_error_version == 3
    assert events[-1] == ("failed", "v", 3)
    assert rt.infer("v", "f", [{"x": 5}]) == [{"y": 5}]


def test_calls_in_flight_finish_on_their_version(rt, tree):
    gate, entered = threading.Event(), threading.Event()
    rt.start(versioned(tree, gate=gate, entered=entered), version=1)
    old_call = rt.infer_async("v", "f", [{"x": "old"}])
    assert entered.wait(10)
    rt.update(versioned(tree), version=2)
    assert rt.infer("v", "f", [{"x": "new"}], timeout=10) == [{"y": "new"}]
    assert [i.version for i in rt.status()] == [2]
    gate.set()
    assert old_call.result(10) == [{"y": "old"}]


def test_a_listener_that_raises_is_logged_not_fatal(rt, tree, caplog):
    def bad(event):
        raise RuntimeError("listener bug")

    rt.add_listener(bad)
    rt.start(versioned(tree), version=1)
    assert "mindserve observer" in caplog.text and "listener bug" in caplog.text
    rt.remove_listener(bad)


def test_watcher_waits_for_a_version_to_settle(tmp_path):
    """A version directory is loaded once its files are unchanged across two polls."""
    root = tmp_path / "svc"
    (root / "1").mkdir(parents=True)
    loaded, current = [], [1]
    watcher = Watcher(str(root), 3600, lambda: current[0], lambda v: loaded.append(v))
    (root / "2").mkdir()
    assert watcher.poll() is None, "an empty directory is never loaded"
    (root / "2" / "model.mindir").write_bytes(b"x" * 10)
    assert watcher.poll() is None, "first sight: not settled yet"
    (root / "2" / "model.mindir").write_bytes(b"x" * 20)
    assert watcher.poll() is None, "still being written"
    assert watcher.poll() == 2 and loaded == [2]


def test_watcher_does_not_retry_a_failed_version_until_it_changes(tmp_path):
    root = tmp_path / "svc"
    (root / "3").mkdir(parents=True)
    (root / "3" / "m.mindir").write_bytes(b"bad")
    attempts = []

    def load(version):
        attempts.append(version)
        if len(attempts) == 1:
            raise LoadError("corrupt")

    watcher = Watcher(str(root), 3600, lambda: 2, load)
    watcher.poll()
    assert watcher.poll() is None and attempts == [3]
    assert watcher.poll() is None and attempts == [3]
    (root / "3" / "m.mindir").write_bytes(b"fixed!")
    watcher.poll()
    assert watcher.poll() == 3 and attempts == [3, 3]


def test_watch_hot_loads_a_new_version_directory(rt, tmp_path, events):
    root = tmp_path / "w"
    (root / "1").mkdir(parents=True)
    (root / "1" / "weights.bin").write_bytes(b"1")
    rt.start(versioned(str(root), name="w"), watch=True, poll_interval=0.02)
    assert rt.servable_status("w").watching
    (root / "2").mkdir()
    (root / "2" / "weights.bin").write_bytes(b"2")
    wait_until(lambda: rt.servable_status("w").default_version == 2)
    assert [i.version for i in rt.status()] == [2]
    assert ("swapped", "w", 2) in events


def test_watch_needs_a_directory(rt):
    with pytest.raises(ValueError, match="has no directory to watch"):
        rt.start(versioned(None), watch=True)


def test_close_drains_calls_in_flight(tree):
    gate, entered = threading.Event(), threading.Event()
    runtime = mindserve.Runtime()
    runtime.start(versioned(tree, gate=gate, entered=entered), version=1)
    call = runtime.infer_async("v", "f", [{"x": 1}])
    assert entered.wait(10)
    closer = threading.Thread(target=runtime.close, kwargs={"grace": None})
    closer.start()
    closer.join(0.05)
    assert closer.is_alive(), "close waits for the accepted call"
    gate.set()
    closer.join(10)
    assert call.result(10) == [{"y": 1}]


def test_close_waits_for_a_call_on_a_version_an_update_retired(tree):
    gate, entered = threading.Event(), threading.Event()
    runtime = mindserve.Runtime()
    runtime.start(versioned(tree, gate=gate, entered=entered), version=1)
    call = runtime.infer_async("v", "f", [{"x": 1}])
    assert entered.wait(10)
    runtime.update("v", version=2)  # version 1 is retired; its call still runs
    closer = threading.Thread(target=runtime.close, kwargs={"grace": None})
    closer.start()
    closer.join(0.05)
    assert closer.is_alive(), "close waits for the call on the retired version too"
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert call.result(10) == [{"y": 1}]


def test_close_fails_calls_still_running_after_the_grace_period(tmp_path):
    runtime = mindserve.Runtime()
    svc = mindserve.Servable("stuck")
    gate, entered = threading.Event(), threading.Event()
    seen = []
    model = svc.model(
        lambda x: seen.append(x.tolist()) or entered.set() or (gate.wait(30) and x), name="slow"
    )
    svc.add_method(lambda x: model(x), name="f")
    runtime.start(svc)
    first = runtime.infer_async("stuck", "f", [{"x": 1.0}])
    assert entered.wait(10)
    queued = runtime.infer_async("stuck", "f", [{"x": 2.0}])
    wait_until(lambda: runtime._hosted["stuck"].default().models["slow"].scheduler.queued == 1)
    runtime.close(grace=0.05)
    for call in (first, queued):
        with pytest.raises(RuntimeClosedError, match="the runtime was closed before this call completed"):
            call.result(10)
    gate.set()
    assert seen == [[1.0]], "the queued instance was dropped; the running batch was not interrupted"


def test_a_call_never_mixes_versions_across_its_stages(rt):
    """A call that started on the old version runs all its stages there, even after a swap."""

    def definition(tag, gate=None, entered=None):
        svc = mindserve.Servable("mix")

        @svc.stage
        def first(x):
            if gate is not None:
                entered.set()
                gate.wait(30)
            return f"{tag}-first"

        @svc.stage
        def second(x):
            return f"{x}+{tag}-second"

        svc.add_method(lambda x: second(first(x)), name="f", outputs="path")
        return svc

    gate, entered = threading.Event(), threading.Event()
    rt.start(definition("old", gate, entered))
    call = rt.infer_async("mix", "f", [{"x": 0}])
    assert entered.wait(10)
    rt.update(definition("new"), version=1)
    assert rt.infer("mix", "f", [{"x": 0}], timeout=10) == [{"path": "new-first+new-second"}]
    gate.set()
    assert call.result(10) == [{"path": "old-first+old-second"}]


def test_stop_during_an_update_discards_the_new_version(rt, tree, monkeypatch):
    """A servable stopped while its new version loads does not come back to life."""
    gate, entered = threading.Event(), threading.Event()
    svc = mindserve.Servable("v", directory=tree)

    model = svc.model(lambda x: x, name="m")
    svc.add_method(lambda x: model(x), name="f")
    rt.start(svc, version=1)
    original = mindserve._serving.loading.load

    def held_load(*args, **kwargs):
        entered.set()
        gate.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(mindserve._serving.loading, "load", held_load)
    result = []
    updater = threading.Thread(target=lambda: result.append(_capture(lambda: rt.update("v", version=2))))
    updater.start()
    assert entered.wait(10)
    rt.stop("v")
    gate.set()
    updater.join(30)
    assert isinstance(result[0], mindserve.ServableNotFoundError)
    assert "was stopped or restarted while version 2 loaded" in str(result[0])
    assert rt.status() == []


def _capture(call):
    try:
        return call()
    except Exception as exc:
        return exc


# -- the watcher never dies ------------------------------------------------------------------------


@pytest.mark.parametrize("odd", ["²", "①", "٣", "03", "0", "-1", "1.5"])
def test_only_ascii_digit_names_are_version_directories(tmp_path, odd):
    """Python counts '²' as a digit and int() rejects it; '٣' is a digit int() accepts."""
    from mindserve._serving.versions import list_versions

    (tmp_path / "1").mkdir()
    (tmp_path / odd).mkdir()
    assert list_versions(str(tmp_path)) == [1]


def test_start_and_watch_ignore_oddly_named_directories(rt, tmp_path):
    root = tmp_path / "odd"
    for name in ("1", "²", "①"):
        (root / name).mkdir(parents=True)
        (root / name / "weights.bin").write_bytes(b"1")
    info = rt.start(versioned(str(root), name="odd"), watch=True, poll_interval=0.02)
    assert info.version == 1
    (root / "2").mkdir()
    (root / "2" / "weights.bin").write_bytes(b"2")
    wait_until(lambda: rt.servable_status("odd").default_version == 2)
    assert rt.servable_status("odd").watching


def test_a_watchers_failed_version_is_shown_without_logging_configured(tmp_path, capsys, monkeypatch):
    """With no logging configured the failure reaches stderr (docs/running.md#warnings)."""
    from mindserve._observe import visible

    monkeypatch.setattr(visible, "logging_configured", lambda logger: False)
    root = tmp_path / "svc"
    (root / "2").mkdir(parents=True)
    (root / "2" / "m.bin").write_bytes(b"x")

    def load(version):
        raise LoadError("model 'm': broken file")

    err = []
    watcher = Watcher(str(root), 0.02, lambda: 1, load)
    watcher.start()
    try:
        wait_until(lambda: err.append(capsys.readouterr().err) or "broken file" in "".join(err))
    finally:
        watcher.stop()
        watcher.join(5)
    assert (
        f"mindserve: error: watching {root}: version 2 failed to load (tried again when its files change): "
        f"model 'm': broken file\n" == "".join(err)
    )


def test_the_watcher_survives_unexpected_errors_and_reports_them(tmp_path, caplog):
    root = tmp_path / "svc"
    (root / "2").mkdir(parents=True)
    (root / "2" / "m.bin").write_bytes(b"x")
    attempts, errors = [], []

    def load(version):
        attempts.append(version)
        if len(attempts) == 1:
            raise RuntimeError("something nobody expected")

    watcher = Watcher(str(root), 0.02, lambda: 1, load, on_error=lambda v, e: errors.append((v, e)))
    watcher.start()
    try:
        wait_until(lambda: errors)
        assert errors[0][0] == 2 and "something nobody expected" in str(errors[0][1])
        assert watcher.alive
        (root / "2" / "m.bin").write_bytes(b"changed")  # tried again once it changes
        wait_until(lambda: len(attempts) == 2)
        assert watcher.alive
    finally:
        watcher.stop()
        watcher.join(5)
    assert not watcher.alive
    assert any("something nobody expected" in r.getMessage() for r in caplog.records)


# -- listeners that call back into the runtime (issue 20, item 2) -------------------------


def _in_thread(function, seconds=10.0):
    """Run ``function`` in a thread; whether it ended within ``seconds`` (a hang guard)."""
    thread = threading.Thread(target=function, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_listener_that_rolls_back_on_failed_does_not_deadlock(rt, tree, events):
    svc = versioned(tree)
    rolled_back = []

    def roll_back(event):
        if event.kind == "failed" and not rolled_back:
            rolled_back.append(rt.update("v", version=1).version)

    rt.add_listener(roll_back)
    rt.start(svc, version=2)
    broken = mindserve.Servable("v", directory=tree)
    model = broken.model("missing.mindir")
    broken.add_method(lambda x: model(x), name="f")

    def update():
        with pytest.raises(LoadError):
            rt.update(broken, version=3)

    assert _in_thread(update), "the listener's rt.update() deadlocked"
    assert rolled_back == [1]
    assert rt.servable_status("v").default_version == 1
    assert events[-4:] == [("failed", "v", 3), ("loaded", "v", 1), ("swapped", "v", 1), ("unloaded", "v", 2)]
    assert _in_thread(lambda: rt.update("v", version=3)), "later updates of that servable block"


def test_an_observer_that_loads_on_swapped_does_not_deadlock(rt, tree, events):
    svc = versioned(tree)
    loaded = []

    class LoadBeside(mindserve.Observer):
        def on_version(self, event):
            if event.kind == "swapped" and event.version == 2 and not loaded:
                loaded.append(rt.load(svc, version=3).version)

    rt.add_observer(LoadBeside())
    assert _in_thread(lambda: rt.start(svc, version=2)), "the observer's rt.load() deadlocked"
    assert loaded == [3]
    assert [i.version for i in rt.status()] == [2, 3]
    assert events == [("loaded", "v", 2), ("swapped", "v", 2), ("loaded", "v", 3), ("swapped", "v", 3)]


def test_a_failed_update_to_the_newest_records_the_version_it_tried(rt, tree, events):
    """Issue 20, item 13: not version=None."""
    rt.start(versioned(tree), version=1)
    broken = mindserve.Servable("v", directory=tree)
    model = broken.model("missing.mindir")
    broken.add_method(lambda x: model(x), name="f")
    with pytest.raises(LoadError):
        rt.update(broken)
    assert rt.servable_status("v").last_error_version == 3
    assert events[-1] == ("failed", "v", 3)

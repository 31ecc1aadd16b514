"""Faults on real MindSpore: a network raising inside a shared batch, hot updates of MindIR
versions repeated under load, and a watched directory with corrupt, truncated, deleted and oddly
named versions. Every caller gets its own result or a mindserve error, and every wait is bounded.
(Faults of Python callables: tests/unit/test_faults.py.)
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest

import mindserve
from mindserve import LoadError, MindServeError, ModelError
from raising import CustomBase, Unprintable, assert_readable, name
from reference import run_net
from waiting import wait_until

# -- 1. a network raising ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad"), Unprintable(), KeyboardInterrupt(), SystemExit(3), CustomBase()],
    ids=name,
)
def test_a_mindspore_network_raising_fails_only_the_bad_instance(exc):
    """A real nn.Cell (PyNative), raising from inside MindSpore's Cell call for one caller's
    instance of a shared batch: the other callers get the network's own answers."""
    from mindspore import nn

    from models import MLP

    gate, entered = threading.Event(), threading.Event()

    class Raising(nn.Cell):
        def __init__(self):
            super().__init__()
            self.mlp = MLP(seed=1)

        def construct(self, x):
            values = x.asnumpy()
            if (values == 0).all(axis=1).any():
                entered.set()
                gate.wait(10)
            if (values == -1).all(axis=1).any():
                raise exc
            return self.mlp(x)

    net = Raising()
    svc = mindserve.Servable("cell")
    model = svc.model(net, name="net", batching=mindserve.Batching(max_batch_size=8))
    svc.add_method(lambda x: model(x), name="predict")
    rng = np.random.default_rng(0)
    xs = {k: rng.normal(size=16).astype(np.float32) for k in range(1, 5)}
    xs[-1] = np.full(16, -1, np.float32)
    with mindserve.Runtime(warm_up=False) as rt:
        rt.start(svc)
        try:
            busy = rt.infer_async("cell", "predict", [{"x": np.zeros(16, np.float32)}])
            assert entered.wait(30)
            futures = {
                k: rt.infer_async("cell", "predict", [{"x": x}], return_exceptions=True)
                for k, x in xs.items()
            }
            wait_until(lambda: rt._hosted["cell"].default().models["net"].scheduler.queued == len(xs))
        finally:
            gate.set()
        busy.result(30)
        for k, future in futures.items():
            (result,) = future.result(30)
            if k == -1:
                assert_readable(result, ModelError, exc)
            else:
                np.testing.assert_allclose(
                    result["output"], run_net(net.mlp, xs[k][None])[0], rtol=1e-5, atol=1e-6
                )
        (after,) = rt.infer("cell", "predict", [{"x": xs[1]}], timeout=30)
        np.testing.assert_allclose(after["output"], run_net(net.mlp, xs[1][None])[0], rtol=1e-5, atol=1e-6)


# -- 2. hot updates under load ---------------------------------------------------------------------


def test_ten_hot_updates_under_16_callers_never_fail_or_mix_versions(rt, exported, tmp_path):
    """Versions 1 and 2 of a real MindIR model swap back and forth ten times while 16 threads
    call; each answer is one version's, and calls made between two updates get the one the
    last update made the default."""
    root = tmp_path / "mlp"
    shutil.copytree(os.path.join(exported["root"], "mlp"), root)
    svc = mindserve.Servable("mlp", directory=str(root))
    mlp = svc.model("mlp.mindir", batching=mindserve.Batching(max_batch_size=4))  # 3 compiles a load
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    rt.start(svc, version=1)
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=16).astype(np.float32) for _ in range(16)]
    expected = {v: run_net(exported["nets"][f"mlp_v{v}"], np.stack(xs)) for v in (1, 2)}
    answers, failures = [], []
    stop = threading.Event()

    def caller(k):
        while not stop.is_set():
            started = time.monotonic()
            try:
                (answer,) = rt.infer("mlp", "predict", [{"x": xs[k]}], timeout=60)
            except BaseException as exc:
                failures.append(exc)
                return
            answers.append((k, started, time.monotonic(), answer["logits"]))

    def wait_for_calls_made_after(since):
        count = len(answers)
        wait_until(lambda: sum(a[1] > since for a in answers[count:]) >= 8 or failures, timeout=60)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(16)]
    updates = []  # (began, ended, version)
    try:
        for t in threads:
            t.start()
        since = time.monotonic()
        for i in range(11):
            wait_for_calls_made_after(since)  # then the next update
            if i == 10:
                break
            version = 2 if i % 2 == 0 else 1
            began = time.monotonic()
            assert rt.update("mlp", version=version).version == version
            since = time.monotonic()
            updates.append((began, since, version))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    assert not any(t.is_alive() for t in threads)
    checked = 0
    windows = [
        (ended, next_began, v)
        for (_, ended, v), (next_began, _, _) in zip(updates, [*updates[1:], (float("inf"), 0, 0)])
    ]
    for k, started, ended, logits in answers:
        versions = [v for v in (1, 2) if np.allclose(logits, expected[v][k], rtol=1e-5, atol=1e-6)]
        assert versions, f"an answer from neither version for caller {k}"
        for after, before, v in windows:
            if started > after and ended < before:
                assert versions == [v], (k, versions, v)
                checked += 1
    assert checked >= 10 * 8, "calls between updates were checked against the current version"
    status = rt.servable_status("mlp")
    assert status.default_version == 1 and [i.version for i in status.versions] == [1]


# -- 3. the watcher facing a hostile directory ------------------------------------------------------


def watched_mlp(root):
    svc = mindserve.Servable("mlp", directory=str(root))
    mlp = svc.model("mlp.mindir", batching=mindserve.Batching(max_batch_size=4))
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    return svc


def publish(root, version, data):
    """Write a version directory whole: into another name, then renamed to its number."""
    staging = root / f"{version}.tmp"
    staging.mkdir()
    (staging / "mlp.mindir").write_bytes(data)
    staging.rename(root / str(version))


def assert_serves(rt, exported, version_net):
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    (answer,) = rt.infer("mlp", "predict", [{"x": x}], timeout=30)
    np.testing.assert_allclose(
        answer["logits"], run_net(exported["nets"][version_net], x[None])[0], rtol=1e-5, atol=1e-6
    )


def test_the_watcher_survives_corrupt_truncated_deleted_and_oddly_named_versions(rt, exported, tmp_path):
    root = tmp_path / "mlp"
    good = {v: open(os.path.join(exported["root"], "mlp", str(v), "mlp.mindir"), "rb").read() for v in (1, 2)}
    (root / "1").mkdir(parents=True)
    (root / "1" / "mlp.mindir").write_bytes(good[1])
    rt.start(watched_mlp(root), watch=True, poll_interval=0.02)
    corrupt = np.random.default_rng(2).bytes(len(good[1]))
    for odd in ("²", "①", "01", "-1", "1.0", "0", "٣", "99 "):
        (root / odd).mkdir()
        (root / odd / "mlp.mindir").write_bytes(corrupt)  # loading any of these would fail
    (root / "98").write_bytes(good[2])  # a file named like a version

    def failed_on(version):
        status = rt.servable_status("mlp")
        return status.last_error_version == version

    publish(root, 2, corrupt)  # random bytes
    wait_until(lambda: failed_on(2))
    status = rt.servable_status("mlp")
    assert isinstance(status.last_error, LoadError) and "version 2" in str(status.last_error)
    assert status.watching and status.default_version == 1
    publish(root, 3, good[2][: len(good[2]) // 2])  # truncated
    wait_until(lambda: failed_on(3))
    assert isinstance(rt.servable_status("mlp").last_error, LoadError)
    assert rt.servable_status("mlp").watching
    assert_serves(rt, exported, "mlp_v1")
    publish(root, 4, good[2])
    wait_until(lambda: rt.servable_status("mlp").default_version == 4)
    assert_serves(rt, exported, "mlp_v2")
    shutil.rmtree(root / "4")  # deleted while loaded: its model is in memory, it serves on
    for _ in range(3):
        assert_serves(rt, exported, "mlp_v2")
    publish(root, 5, good[1])
    wait_until(lambda: rt.servable_status("mlp").default_version == 5)
    assert_serves(rt, exported, "mlp_v1")
    status = rt.servable_status("mlp")
    assert status.watching and [i.version for i in status.versions] == [5]


def test_a_version_deleted_while_the_watcher_loads_it_is_reported_and_the_next_one_loads(
    rt, exported, tmp_path, monkeypatch
):
    from mindserve._serving import loading

    root = tmp_path / "mlp"
    good = open(os.path.join(exported["root"], "mlp", "1", "mlp.mindir"), "rb").read()
    (root / "1").mkdir(parents=True)
    (root / "1" / "mlp.mindir").write_bytes(good)
    rt.start(watched_mlp(root), watch=True, poll_interval=0.02)
    original = loading.load
    entered, go_on = threading.Event(), threading.Event()

    def held_load(definition, version, *args, **kwargs):
        if version == 2:  # the watcher has picked version 2: hold it before it reads the files
            entered.set()
            go_on.wait(10)
        return original(definition, version, *args, **kwargs)

    monkeypatch.setattr(loading, "load", held_load)
    try:
        publish(root, 2, good)
        assert entered.wait(10)
        shutil.rmtree(root / "2")
    finally:
        go_on.set()
    wait_until(lambda: rt.servable_status("mlp").last_error_version == 2)
    status = rt.servable_status("mlp")
    assert isinstance(status.last_error, MindServeError) and status.watching and status.default_version == 1
    publish(root, 3, good)
    wait_until(lambda: rt.servable_status("mlp").default_version == 3)
    assert_serves(rt, exported, "mlp_v1")
    assert rt.servable_status("mlp").watching

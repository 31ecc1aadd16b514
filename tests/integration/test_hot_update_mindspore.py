"""Swapping real MindIR versions under load: no failed call, no mixed or stale answers."""

import gc
import os
import shutil
import threading
import time
import weakref

import numpy as np
import pytest

from mindserve import LoadError
from reference import run_net
from servables import mlp_servable
from waiting import wait_until


def test_swap_under_load_1_2_then_corrupt_3(rt, exported, tmp_path):
    """Threads keep calling while version 1 -> 2 -> 3 (corrupt) are swapped in."""
    root = tmp_path / "mlp"
    shutil.copytree(os.path.join(exported["root"], "mlp"), root)
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    expected = {v: run_net(exported["nets"][f"mlp_v{v}"], x[None])[0] for v in (1, 2)}
    assert not np.allclose(expected[1], expected[2])
    svc = mlp_servable(str(root))
    rt.start(svc, version=1)

    results, failures = [], []
    stop = threading.Event()
    swapped_at = [float("inf")]

    def caller():
        while not stop.is_set():
            started = time.monotonic()
            try:
                (answer,) = rt.infer("mlp", "predict", [{"x": x}])
                results.append((started, answer["logits"]))
            except Exception as exc:  # pragma: no cover - must not happen
                failures.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: len(results) >= 20, timeout=60)
    rt.update("mlp", version=2)
    swapped_at[0] = time.monotonic()
    count_at_swap = len(results)
    wait_until(lambda: len(results) >= count_at_swap + 20, timeout=60)
    os.makedirs(root / "3")
    (root / "3" / "mlp.mindir").write_bytes(b"\x08\x01 corrupt " * 100)
    with pytest.raises(LoadError):
        rt.update("mlp", version=3)
    count_after_failure = len(results)
    wait_until(lambda: len(results) >= count_after_failure + 20, timeout=60)
    stop.set()
    for t in threads:
        t.join(60)

    assert failures == []
    version_of = []
    for started, logits in results:
        if np.allclose(logits, expected[1], rtol=1e-5, atol=1e-6):
            version_of.append((started, 1))
        elif np.allclose(logits, expected[2], rtol=1e-5, atol=1e-6):
            version_of.append((started, 2))
        else:  # pragma: no cover - a mixed or corrupt answer
            raise AssertionError(f"an answer from neither version: {logits}")
    assert {v for _, v in version_of} == {1, 2}
    assert all(v == 2 for started, v in version_of if started > swapped_at[0]), "no v1 answer after the swap"
    status = rt.servable_status("mlp")
    assert status.default_version == 2 and [i.version for i in status.versions] == [2]
    assert status.last_error_version == 3 and isinstance(status.last_error, LoadError)


def test_a_replaced_version_is_freed_under_load(rt, exported, tmp_path):
    """Nothing keeps a replaced version alive: once its last call has finished, its servable,
    models, schedulers and MindSpore network are garbage, while callers keep calling."""
    root = tmp_path / "mlp"
    shutil.copytree(os.path.join(exported["root"], "mlp"), root)
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    rt.start(mlp_servable(str(root)), version=1)
    answered, failures = [0], []
    stop = threading.Event()

    def caller():
        while not stop.is_set():
            try:
                rt.infer("mlp", "predict", [{"x": x}] * (1 + answered[0] % 3))
                answered[0] += 1
            except Exception as exc:  # pragma: no cover - must not happen
                failures.append(exc)

    def parts(loaded):
        """Weak references to a running version and what it holds."""
        objects = [loaded, *loaded.models.values()]
        for model in loaded.models.values():
            objects += [model.scheduler, model.backend, model.backend.network]
        return [weakref.ref(o) for o in objects]

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    replaced = []
    for version in (2, 1, 2):
        replaced += parts(rt._hosted["mlp"].default())
        calls = answered[0]
        rt.update("mlp", version=version)
        wait_until(lambda calls=calls: answered[0] >= calls + 20, timeout=60)  # the new version serves

    def freed():
        gc.collect()
        return all(ref() is None for ref in replaced)

    try:  # the callers still call meanwhile; a collection takes a while, so look every 50 ms
        deadline, pause = time.monotonic() + 30, threading.Event()
        while not freed() and time.monotonic() < deadline:
            pause.wait(0.05)
        assert freed(), [ref() for ref in replaced if ref() is not None]
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    assert rt.servable_status("mlp").default_version == 2

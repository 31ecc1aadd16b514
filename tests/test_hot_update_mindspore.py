"""Swapping real MindIR versions under load: no failed call, no mixed or stale answers."""

import os
import shutil
import threading
import time

import numpy as np
import pytest

import mindserve
from conftest import run_net
from mindserve import LoadError
from test_scheduler import wait_until


def mlp_servable(directory):
    svc = mindserve.Servable("mlp", directory=directory)
    mlp = svc.model("mlp.mindir")
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    return svc


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

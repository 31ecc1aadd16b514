"""Model file integrity in worker processes: what a worker loads is what it checked."""

from __future__ import annotations

import hashlib
import os
import shutil
import textwrap

import numpy as np

import mindserve
from reference import run_net

#: Imported by every worker interpreter (on its PYTHONPATH): renames ``MINDSERVE_TEST_SWAP``'s
#: second file over its first just before MindSpore loads a model, once.
SITECUSTOMIZE = textwrap.dedent(
    """
    import os

    swap = os.environ.get("MINDSERVE_TEST_SWAP")
    if swap:
        from mindserve._execution import mindspore as _mindspore

        real_load = _mindspore.load_mindir
        target, other = swap.split(os.pathsep)

        def swapping_load(path, *args, **kwargs):
            if os.path.exists(other):
                os.replace(other, target)
            return real_load(path, *args, **kwargs)

        _mindspore.load_mindir = swapping_load
    """
)


def test_a_worker_loads_the_bytes_it_checked_when_a_file_is_renamed_over_the_model(
    exported, tmp_path, monkeypatch
):
    """The time-of-check/time-of-use race made deterministic in the worker: a file renamed
    over the model between its SHA-256 check and MindSpore's load is not what serves."""
    root = tmp_path / "mlp"
    shutil.copytree(os.path.join(exported["root"], "mlp", "1"), root / "1")
    model = root / "1" / "mlp.mindir"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    other = tmp_path / "other.mindir"
    shutil.copy(os.path.join(exported["root"], "mlp", "2", "mlp.mindir"), other)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MINDSERVE_TEST_SWAP", os.pathsep.join([str(model), str(other)]))

    svc = mindserve.Servable("mlp", directory=str(root))
    mlp = svc.model("mlp.mindir", sha256=digest)
    svc.add_method(lambda x: mlp(x), name="predict")
    with mindserve.Runtime() as rt:
        rt.start(svc, workers=1)
        assert not other.exists()  # the worker swapped the file
        x = np.linspace(-1, 1, 16, dtype=np.float32)
        got = rt.infer("mlp", "predict", [{"x": x}])[0]["output"]
    np.testing.assert_array_equal(got, run_net(exported["nets"]["mlp_v1"], x[None])[0])

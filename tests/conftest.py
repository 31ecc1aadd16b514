"""Shared fixtures, and the layers of the suite (tests/README.md).

Each test gets the marker of its folder: ``unit``, ``integration`` or ``e2e`` (so ``pytest -m unit``
runs the inner loop). MindSpore is imported only by the fixtures that export real models, and the
helper modules of tests/helpers are importable by name (``from gated import Gate``) from every folder."""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "helpers"))

import mindserve  # noqa: E402
from reference import ENC_KEY  # noqa: E402

LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config, items):
    """Mark each test with its layer, the folder it lives in (tests/<layer>/...)."""
    for item in items:
        layer = layer_of(item)
        if layer is not None:
            item.add_marker(layer)


def layer_of(item):
    """``unit``, ``integration`` or ``e2e``: the folder of tests/ that holds the test (else None)."""
    path = item.path
    if not path.is_relative_to(HERE):
        return None
    parts = path.relative_to(HERE).parts
    return parts[0] if len(parts) > 1 and parts[0] in LAYERS else None


#: A test file whose tests share a costly module-scoped fixture (a Ray instance, warm workers,
#: exported servables): under pytest-xdist its tests run on one worker, the fixture made once.
SHARES_A_MODULE_FIXTURE = re.compile(r'scope="module"|\bcompat_root\b|\bserved[,)]')


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``-n auto`` (pytest-xdist's ``load``): tests are sent one by one to whichever worker is
    free, except that the tests of a file with a shared module-scoped fixture go together to
    one worker (the fixture made once). Both workers finish together, where xdist's ``load``
    first sends each worker a quarter of its share in collection order (one got the whole e2e
    layer, the other then sat idle). Another ``--dist`` on the command line is left alone."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesWithSharedFixtures(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return path if shares_a_module_fixture(os.path.join(config.rootpath, path)) else nodeid

    return FilesWithSharedFixtures(config, log)


@functools.cache
def shares_a_module_fixture(path):
    try:
        with open(path, encoding="utf-8") as source:
            return SHARES_A_MODULE_FIXTURE.search(source.read()) is not None
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _no_warm_up_unless_asked(request, monkeypatch):
    """In tests/integration and tests/e2e, runtimes that read ``MINDSERVE_WARM_UP`` (the default)
    load models without warming up every bucket (each bucket of a MindIR model is a compile),
    unless the test is marked ``warm_up``: about warm-up, or running code as a user would."""
    if (
        layer_of(request.node) in ("integration", "e2e")
        and request.node.get_closest_marker("warm_up") is None
    ):
        monkeypatch.setenv("MINDSERVE_WARM_UP", "0")


@pytest.fixture
def rt():
    """A runtime closed at the end of the test."""
    with mindserve.Runtime() as runtime:
        yield runtime


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Small MindIR files exported once per session, with the networks that made them.

    Layout: ``<root>/<name>/<version>/<file>.mindir``.
    """
    import mindspore as ms

    from models import MLP, AddMul, LeNet, ScaleBy, dynamic, export, zeros

    root = tmp_path_factory.mktemp("models")
    nets = {"mlp_v1": MLP(seed=1), "mlp_v2": MLP(seed=2), "lenet": LeNet(), "addmul": AddMul()}
    paths = {
        "mlp_dynamic": export(nets["mlp_v1"], f"{root}/mlp/1/mlp.mindir", dynamic((16,))),
        "mlp_v2": export(nets["mlp_v2"], f"{root}/mlp/2/mlp.mindir", dynamic((16,))),
        "mlp_fixed4": export(nets["mlp_v1"], f"{root}/mlp_fixed/1/mlp.mindir", zeros(4, 16)),
        "mlp_encrypted": export(
            nets["mlp_v1"],
            f"{root}/mlp_enc/1/mlp.mindir",
            dynamic((16,)),
            enc_key=ENC_KEY,
            enc_mode="AES-GCM",
        ),
        "lenet": export(nets["lenet"], f"{root}/lenet/1/lenet.mindir", zeros(2, 1, 32, 32)),
        "addmul": export(nets["addmul"], f"{root}/addmul/1/addmul.mindir", dynamic((3,)), dynamic((3,))),
        "scale": export(
            ScaleBy(), f"{root}/scale/1/scale.mindir", dynamic((3,)), ms.Tensor(np.ones((3,), np.float32))
        ),
    }
    return {"root": str(root), "nets": nets, "paths": paths}


@pytest.fixture(scope="session")
def text_models(tmp_path_factory):
    """Variable-length models (tests/helpers/models.py), exported once with dynamic batch and
    length dimensions: ``encoder`` (ids, mask), ``per_token`` and ``mean_pool`` ((length, 8))."""
    import mindspore as ms
    from mindspore import Tensor

    from models import VOCAB, MeanPool, PerToken, TinyEncoder, export

    root = tmp_path_factory.mktemp("lengths")
    nets = {"encoder": TinyEncoder(vocab=VOCAB), "per_token": PerToken(seed=1), "mean_pool": MeanPool(seed=2)}
    export(
        nets["encoder"],
        f"{root}/encoder/1/encoder.mindir",
        Tensor(shape=[None, None], dtype=ms.int32),
        Tensor(shape=[None, None], dtype=ms.float32),
    )
    for name in ("per_token", "mean_pool"):
        export(nets[name], f"{root}/{name}/1/{name}.mindir", Tensor(shape=[None, None, 8], dtype=ms.float32))
    return {"root": str(root), "nets": nets}


@pytest.fixture(scope="module")
def compat_root(tmp_path_factory):
    """The servables of tests/compat_servables, with their version 1 models exported."""
    import mindspore as ms
    from mindspore import nn, ops

    from models import MLP, AddMul, dynamic, export

    class Add(nn.Cell):
        def construct(self, x, y):
            return x + y

    class Mul(nn.Cell):
        def construct(self, x, y):
            return ops.mul(x, y)

    root = tmp_path_factory.mktemp("compat")
    shutil.copytree(os.path.join(HERE, "compat_servables"), root, dirs_exist_ok=True)
    for name in ("add", "batchfn", "subgraphs", "legacy", "values"):
        export(Add(), f"{root}/{name}/1/tensor_add.mindir", dynamic((3,)), dynamic((3,)))
    export(Mul(), f"{root}/subgraphs/1/tensor_mul.mindir", dynamic((3,)), dynamic((3,)))
    export(AddMul(), f"{root}/multi/1/addmul.mindir", dynamic((3,)), dynamic((3,)))
    mlp = MLP(seed=5)
    export(mlp, f"{root}/pipeline/1/mlp.mindir", dynamic((16,)))
    export(Add(), f"{root}/pipeline/1/add10.mindir", dynamic((10,)), dynamic((10,)))
    del ms
    return {"root": str(root), "mlp": mlp}


@pytest.fixture
def served(compat_root):
    """Start servables of tests/compat_servables through the compat server; stop them (and
    any RESTful server started meanwhile) afterwards."""
    from mindserve.compat import server

    started = []

    def start(name, **options):
        server.start_servables(server.ServableStartConfig(compat_root["root"], name, device_ids=0, **options))
        started.append(name)

    yield start
    server.stop()


# mindserve's pytest plugin, as installing the package registers it (entry point pytest11).
from mindserve.testing.pytest_plugin import mindserve_runtime  # noqa: E402, F401

"""Shared fixtures. MindSpore is imported only by the fixtures that export real models."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import mindserve

ENC_KEY = b"0123456789ABCDEF"


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


def run_net(net, *arrays):
    """Call a MindSpore network directly, the reference the tests compare with."""
    import mindspore as ms

    with mindserve.mindspore_lock():
        out = net(*(ms.Tensor(a) for a in arrays))
        if isinstance(out, (tuple, list)):
            return tuple(o.asnumpy() for o in out)
        return out.asnumpy()


# mindserve's pytest plugin, as installing the package registers it (entry point pytest11).
from mindserve.testing.pytest_plugin import mindserve_runtime  # noqa: E402, F401

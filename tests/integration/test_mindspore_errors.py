"""MindSpore's errors as the user reads them: the meaningful line of a framed error, and the
raw errors of an ``nn.Cell`` located with what was expected and what arrived."""

from __future__ import annotations

import numpy as np
import pytest

import mindserve
from mindserve import DefinitionError, InferenceError


@pytest.fixture(scope="module")
def huge_tile(tmp_path_factory):
    """A MindIR model whose graph asks for 4 TB: MindSpore refuses the allocation with a framed
    error ("------\\n- Memory not enough:\\n------\\nMemory isn't enough and alloc failed ...")."""
    from mindspore import nn, ops

    from models import export, zeros

    class HugeTile(nn.Cell):
        def construct(self, x):
            return ops.tile(x, (1000000, 1000000))

    root = tmp_path_factory.mktemp("huge")
    export(HugeTile(), str(root / "huge" / "1" / "huge.mindir"), zeros(1, 1))
    return root / "huge"


def huge_servable(directory):
    svc = mindserve.Servable("huge", directory=str(directory))
    model = svc.model("huge.mindir", with_batch_dim=False)
    svc.add_method(lambda x: model(x), name="predict")
    return svc


def test_a_framed_mindspore_error_reads_as_its_first_meaningful_line(rt, huge_tile):
    rt.start(huge_servable(huge_tile))
    with pytest.raises(InferenceError) as caught:
        rt.infer("huge", "predict", [{"x": np.ones((1, 1), np.float32)}])
    message = str(caught.value)
    assert "model 'huge' failed: RuntimeError: Memory isn't enough and alloc failed" in message
    assert "-----" not in message


@pytest.fixture
def lenet_rt(rt):
    from models import LeNet

    svc = mindserve.Servable("cnn")
    model = svc.model(LeNet(), name="lenet")
    svc.add_method(lambda x: model(x), name="predict")
    rt.start(svc)
    return rt


def test_a_cell_given_the_wrong_dtype_says_what_it_expected_and_what_it_got(lenet_rt):
    """``For primitive[Conv2D], the input type must be same.`` becomes a located ModelError
    naming the input, the dtype expected and the one that arrived."""
    with pytest.raises(InferenceError) as caught:
        lenet_rt.infer("cnn", "predict", [{"x": np.ones((1, 32, 32), np.float64)}])
    error = caught.value.errors[0]
    assert isinstance(error, mindserve.ModelError)
    message = str(error)
    assert "model 'lenet' failed on input 0: expected float32" in message
    assert "got float64 array of shape (1, 32, 32)" in message
    assert "For primitive[Conv2D], the input type must be same" in message  # MindSpore's words kept


def test_a_cell_given_the_wrong_shape_after_serving_says_the_shape_it_ran_with(lenet_rt):
    assert lenet_rt.infer("cnn", "predict", [{"x": np.ones((1, 32, 32), np.float32)}])[0]["output"].shape == (
        10,
    )
    with pytest.raises(InferenceError) as caught:
        lenet_rt.infer("cnn", "predict", [{"x": np.ones((2, 32, 32), np.float32)}])
    message = str(caught.value.errors[0])
    assert (
        "model 'lenet' failed on input 0: expected float32 array of shape (1, 32, 32) (as it last ran)"
        in message
    )
    assert "got float32 array of shape (2, 32, 32)" in message


def test_a_cell_class_instead_of_an_instance_is_refused_at_definition():
    from models import LeNet

    with pytest.raises(DefinitionError, match=r"the class LeNet, not an instance.*Hint: .*LeNet\(\)"):
        mindserve.Servable("cnn").model(LeNet)

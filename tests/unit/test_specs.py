"""The instance value type matrix and model-input conversion."""

import re

import numpy as np
import pytest

from mindserve import TensorSpec
from mindserve._values import check_instance_value, to_model_input


@pytest.mark.parametrize(
    "value",
    [np.zeros((2, 3), np.float32), np.int8(3), np.bool_(True), True, 7, 2.5, "text", b"bytes", np.arange(3)],
)
def test_supported_instance_values(value):
    assert check_instance_value(value) is None


@pytest.mark.parametrize(
    "value, match",
    [
        ([1, 2], "got list \\[1, 2\\]. Hint: convert it with numpy.asarray"),
        ((1, 2), "got tuple"),
        (None, "got NoneType"),
        (object(), "got object"),
        ({"a": 1}, "got dict"),
        (np.array(["a"]), "numeric or bool dtype; got <U1 array"),
        (np.array([object()]), "got object array"),
        (2**70, "fits in int64"),
    ],
)
def test_unsupported_instance_values(value, match):
    problem = check_instance_value(value)
    assert problem is not None
    assert re.search(match, problem), problem


def test_spec_describes_itself():
    assert TensorSpec((None, 256), "float32").describe() == "float32 array of shape (None, 256)"
    assert TensorSpec((3,)).describe() == "array of shape (3,)"
    assert TensorSpec((-1, 4), "int32").shape == (None, 4)


def test_numpy_values_must_match_dtype_exactly():
    spec = TensorSpec((4,), "float32")
    array, problem = to_model_input(np.zeros(4, np.float32), spec)
    assert problem is None and array.dtype == np.float32
    array, problem = to_model_input(np.zeros(4, np.float64), spec)
    assert array is None
    assert problem == (
        "expected float32 array of shape (4,); got float64 array of shape (4,). "
        "Hint: convert it with .astype('float32')"
    )


def test_shapes_are_checked_with_wildcards():
    spec = TensorSpec((None, 3), "float32")
    assert to_model_input(np.zeros((5, 3), np.float32), spec)[1] is None
    assert "got float32 array of shape (5, 4)" in to_model_input(np.zeros((5, 4), np.float32), spec)[1]
    assert "got float32 array of shape (3,)" in to_model_input(np.zeros(3, np.float32), spec)[1]


@pytest.mark.parametrize(
    "value, dtype, ok",
    [
        (1.5, "float32", True),
        (3, "float32", True),
        (3, "int32", True),
        (True, "bool", True),
        (1.5, "int32", False),
        (True, "float32", False),
        (2**40, "int32", False),
    ],
)
def test_python_scalars_cast_when_lossless(value, dtype, ok):
    array, problem = to_model_input(value, TensorSpec((), dtype))
    assert (problem is None) == ok, problem
    if ok:
        assert array.dtype == np.dtype(dtype) and array.item() == value


@pytest.mark.parametrize("value", ["text", b"raw", [1.0], None])
def test_non_tensors_are_rejected_for_model_inputs(value):
    array, problem = to_model_input(value, TensorSpec((1,), "float32"))
    assert array is None and problem.startswith("expected float32 array of shape (1,); got ")


def test_without_spec_values_pass_as_arrays():
    array, problem = to_model_input(np.ones(2, np.float64), None)
    assert problem is None and array.dtype == np.float64
    assert to_model_input("x", None)[1] == "expected a numpy array or a number; got str of length 1"

"""MindSpore's errors raised in a worker process read as they do in this process."""

from __future__ import annotations

import numpy as np
import pytest

import mindserve
from mindserve import InferenceError


def test_a_framed_mindspore_error_in_a_worker_reads_as_its_first_meaningful_line(tmp_path):
    """A graph that asks MindSpore for 4 TB fails with a framed error ("------" rules around
    "- Memory not enough:"); the caller reads "Memory isn't enough and alloc failed ..."."""
    from mindspore import nn, ops

    from models import export, zeros

    class HugeTile(nn.Cell):
        def construct(self, x):
            return ops.tile(x, (1000000, 1000000))

    export(HugeTile(), str(tmp_path / "huge" / "1" / "huge.mindir"), zeros(1, 1))
    svc = mindserve.Servable("huge", directory=str(tmp_path / "huge"))
    model = svc.model("huge.mindir", with_batch_dim=False)
    svc.add_method(lambda x: model(x), name="predict")
    with mindserve.Runtime() as rt:
        rt.start(svc, workers=1)
        with pytest.raises(InferenceError) as caught:
            rt.infer("huge", "predict", [{"x": np.ones((1, 1), np.float32)}])
    message = str(caught.value)
    assert "RuntimeError: Memory isn't enough and alloc failed" in message
    assert "-----" not in message

"""The messages between the main process and a worker: typed, and their arrays still cross
through shared memory."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import mindserve
from mindserve._crossing import RemoteTraceback, portable_error, restore_traceback
from mindserve._errors import is_int
from mindserve._execution.plan import WarmUp
from mindserve._workers import protocol, transfer
from mindserve._workers.protocol import (
    Boot,
    Done,
    ModelReady,
    Raised,
    Ready,
    RunModel,
    RunStage,
    Stop,
    WorkerState,
)
from mindserve._workers.transfer import PREFIX, Channel

SRC = os.pathsep.join(
    p for p in (os.path.dirname(os.path.dirname(mindserve.__file__)), os.environ.get("PYTHONPATH", "")) if p
)


def test_a_model_command_sends_its_arrays_through_shared_memory():
    read, write = multiprocessing.Pipe(duplex=False)
    prefix = f"{PREFIX}{os.getpid()}-protocol-"
    writer, reader = Channel(write, prefix), Channel(read, prefix)
    try:
        _send_a_model_command(writer, reader)
    finally:
        writer.drop()
        reader.drop()
        transfer.sweep(prefix)
        read.close()
        write.close()


def _send_a_model_command(writer: Channel, reader: Channel) -> None:
    arrays = (np.arange(50_000, dtype=np.float32).reshape(500, 100), np.arange(6, dtype=np.int64)[::2])
    message = protocol.prepare(RunModel("mlp", arrays), lend=True)
    header, raws, _, size = message
    assert len(raws) == 2 and size >= arrays[0].nbytes  # both arrays out of band, the strided one too
    assert len(header) < 1000
    writer.write(message)
    got = protocol.receive(reader)  # lent: views of the segment
    assert isinstance(got, RunModel) and got.model == "mlp"
    assert not got.arrays[0].flags.owndata
    for a, b in zip(arrays, got.arrays):
        assert np.array_equal(a, b)


def _probed_plan():
    """A model's plan as a worker sends it: padded by the load-time probe (with its words to
    tell) and warmed up."""
    from mindserve._execution.local import CallableExecutor
    from mindserve._execution.plan import ModelPlan
    from mindserve._execution.probe import probe
    from mindserve._values import TensorSpec

    executor = CallableExecutor(lambda x: x * 2)
    executor.input_specs = (TensorSpec((None, None, 4), "float32"),)
    model = mindserve.Servable("s").model(lambda x: x * 2, name="m")
    plan = probe(ModelPlan.of(model, executor.input_specs, "here"), executor, declared=False)
    return plan.warmed(WarmUp(((1, 0.1), (2, 0.2)), plan.batching.buckets, (8,)))


def test_every_message_round_trips_and_replies_keep_their_logs():
    record = logging.LogRecord("mindserve", logging.INFO, __file__, 1, "warmed up", None, None)
    stage = RunStage("crop", [(np.ones(3), b"x")], 1.5)
    messages = [
        stage,
        Ready({"m": ModelReady(_probed_plan(), None)}, "CPU:0", 123, [record]),
        Done((np.zeros(2),), [record], 0.25),
        Raised(portable_error(ValueError("bad")), [], 0.5),
        Stop(),
    ]
    for message in messages:
        data, buffers = transfer.dumps(message)
        back = pickle.loads(data, buffers=[b.raw() for b in buffers])
        assert type(back) is type(message)
    ready = pickle.loads(pickle.dumps(messages[1], protocol=5))
    (plan,) = [m.plan for m in ready.models.values()]
    assert plan == messages[1].models["m"].plan and plan.probed == messages[1].models["m"].plan.probed
    assert plan.lengths.source == "probe" and plan.warm.compiled == ((1, 0.1), (2, 0.2))
    done = pickle.loads(pickle.dumps(messages[2], protocol=5))
    assert done.seconds == 0.25 and done.logs[0].msg == "warmed up"


def test_boot_is_a_plain_pickle_the_worker_can_read_before_it_has_a_channel():
    boot = Boot(["/x"], 1, "p-", b"definition", 2, ("CPU", 0), True, logging.INFO, (1, 2))
    assert pickle.loads(pickle.dumps(boot, protocol=5)) == boot


def test_messages_are_frozen():
    with pytest.raises(AttributeError):
        RunStage("s", [], None).timeout = 1.0  # type: ignore[misc]


def test_worker_states_are_the_strings_worker_info_reports():
    assert [s.value for s in WorkerState] == ["starting", "ready", "restarting", "failed", "stopped"]


def test_an_error_keeps_its_traceback_across_the_crossing():
    try:
        raise KeyError("lost")
    except KeyError as exc:
        sent = portable_error(exc)
    arrived = restore_traceback(pickle.loads(pickle.dumps(sent)), "a test process")
    assert isinstance(arrived, KeyError)
    assert isinstance(arrived.__cause__, RemoteTraceback)
    text = str(arrived.__cause__)
    assert "In a test process:\nTraceback (most recent call last)" in text
    assert "test_an_error_keeps_its_traceback_across_the_crossing" in text and "KeyError: 'lost'" in text


def test_importing_the_http_extra_loads_nothing_of_compat():
    """MindSpore Serving's wording lives below both extras: http does not import compat."""
    code = (
        "import sys, mindserve.http\n"
        "loaded = [m for m in sys.modules if m.startswith('mindserve.compat')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": SRC})


@pytest.mark.parametrize(
    ("value", "at_least", "expected"),
    [
        (3, None, True),
        (-1, None, True),
        (True, None, False),
        (False, 0, False),
        (1.0, None, False),
        ("1", None, False),
        (None, None, False),
        (0, 1, False),
        (1, 1, True),
        (np.int64(2), None, False),
    ],
)
def test_an_int_is_not_a_bool(value, at_least, expected):
    assert is_int(value, at_least) is expected

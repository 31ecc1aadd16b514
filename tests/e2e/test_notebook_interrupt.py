"""A Jupyter kernel serving a MindIR model in-process: its "interrupt" stops a cell with
KeyboardInterrupt, as in any kernel (MindSpore's own SIGINT handler would end the kernel)."""

from __future__ import annotations

import os

import pytest


def test_a_jupyter_kernel_interrupt_stops_the_cell_and_the_kernel_lives_on(exported, tmp_path):
    """A Jupyter kernel serving a MindIR model in-process: the kernel's "interrupt" (what the
    notebook's stop button sends) stops a running cell with KeyboardInterrupt, and the kernel
    lives on and still serves."""
    manager_module = pytest.importorskip("jupyter_client.manager")
    pytest.importorskip("ipykernel")
    directory = os.path.join(exported["root"], "mlp")
    manager, client = manager_module.start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        setup = (
            f"import time, numpy as np, mindserve\nsvc = mindserve.Servable('mlp', directory={directory!r})\n"
            "mlp = svc.model('mlp.mindir')\n@svc.method(outputs=['y'])\ndef predict(x):\n    return mlp(x)\n"
            "rt = mindserve.Runtime()\nrt.start(svc, version=1)\n"
            "x = {'x': np.ones(16, np.float32)}\nprint(rt.infer('mlp', 'predict', [x])[0]['y'].shape)"
        )
        assert _run(client, setup) == ("ok", "(10,)\n")
        busy = "rt.infer('mlp', 'predict', [x] * 3)\nprint('busy', flush=True)\ntime.sleep(120)"
        message_id = client.execute(busy, stop_on_error=False)  # the next cell is not aborted
        _wait_for_output(client, message_id, "busy")
        manager.interrupt_kernel()
        reply = _reply(client, message_id)
        assert reply["content"]["status"] == "error", reply["content"]
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert _run(client, "print(len(rt.infer('mlp', 'predict', [x] * 2)))\nrt.close()") == ("ok", "2\n")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _wait_for_output(client, message_id, wanted):
    """Read the kernel's iopub messages until ``message_id`` printed ``wanted``."""
    printed = ""
    while wanted not in printed:
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") == message_id and message["msg_type"] == "stream":
            printed += message["content"]["text"]
    return printed


def _run(client, code):
    """Run ``code`` in the kernel: its status and what it printed."""
    message_id = client.execute(code)
    printed = ""
    while True:
        message = client.get_iopub_msg(timeout=120)
        if message["parent_header"].get("msg_id") != message_id:
            continue
        if message["msg_type"] == "stream":
            printed += message["content"]["text"]
        elif message["msg_type"] == "error":
            printed += "\n".join(message["content"]["traceback"])
        elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    return _reply(client, message_id)["content"]["status"], printed


def _reply(client, message_id):
    """The kernel's reply to ``message_id``, skipping others on the shell channel (on a loaded
    machine, start_new_kernel may have asked for kernel_info more than once)."""
    while True:
        reply = client.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == message_id:
            return reply

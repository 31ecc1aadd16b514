"""Ctrl-C in a process serving MindSpore models in-process: MindSpore installs its own C-level
SIGINT handler (exit status 143) whenever it runs a graph, on whatever thread; mindserve keeps
Python's handling in force, so the interrupt is a ``KeyboardInterrupt`` in the main thread."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import numpy as np
    import mindserve

    def interrupted(label):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs between bytecodes of the main thread
                time.sleep(0.01)
        except KeyboardInterrupt:
            print(label, "KeyboardInterrupt", flush=True)
            return
        print(label, "no interrupt", flush=True)

    svc = mindserve.Servable("mlp", directory=sys.argv[1])
    mlp = svc.model(sys.argv[2])

    @svc.method(outputs=["y"])
    def predict(x):
        return mlp(x)

    with mindserve.Runtime() as rt:
        rt.start(svc, version=1)
        interrupted("after start")
        x = np.ones(16, np.float32)
        rt.infer("mlp", "predict", [{"x": x}] * 3)
        threads = [threading.Thread(target=rt.infer, args=("mlp", "predict", [{"x": x}])) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        interrupted("after calls")
    print("closed", flush=True)
    """
)


def test_ctrl_c_after_start_and_after_served_calls_is_a_keyboard_interrupt(exported, tmp_path):
    """SIGINT right after start (warm-up ran graphs) and after calls served by other threads
    raises KeyboardInterrupt in the main thread; the process is not killed by MindSpore's handler."""
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, MINDSERVE_WARM_UP="1")
    done = subprocess.run(
        [sys.executable, str(script), os.path.join(exported["root"], "mlp"), "mlp.mindir"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert done.stdout.split("\n")[:3] == [
        "after start KeyboardInterrupt",
        "after calls KeyboardInterrupt",
        "closed",
    ]

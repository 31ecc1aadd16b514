"""Run MindSpore Serving's own Python unit tests against mindserve.compat.

Usage::

    python tools/serving_uts.py SERVING_CHECKOUT [PYTEST_ARGS...]

``SERVING_CHECKOUT`` is a checkout of https://github.com/mindspore-ai/serving (nothing is
fetched here). Its tests (``tests/ut/python/tests``) import ``mindspore_serving``; this
script writes, in a temporary directory put first on ``PYTHONPATH``:

* a ``mindspore_serving`` package whose ``server``, ``server.register``, ``client`` and
  ``log`` are mindserve.compat's (``server._servable_local.merge_config`` is compat's
  merge; ``server.distributed`` is out of scope and fails);
* a ``sitecustomize`` that stands in for MindSpore Serving's stub model
  (``tests/ut/stub/graph_impl_stub.cc``) in this process and in worker processes: a model
  file holding ``model content`` named ``tensor_add[_I_O].mindir`` (or ``tensor_sub``) has
  I float32 ``[2, 2]`` inputs (2 by default) and O outputs (1): ``y = x1 + x2 + ...`` (or
  ``x1 - x2 - ...``), ``y_k = y + k``.

Each test file runs in its own pytest process (from the tests' folder, as MindSpore
Serving's ``runtest.sh`` does); the script prints each file's result line and the totals.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

SHIM = {
    "mindspore_serving/__init__.py": """
from mindspore_serving import client, log, server  # noqa: F401
""",
    "mindspore_serving/log.py": """
from mindserve.compat.log import *  # noqa: F401,F403
from mindserve.compat.log import _get_logger  # noqa: F401
""",
    "mindspore_serving/client.py": """
from mindserve.compat import client as _client
from mindserve.compat.client import SSLConfig  # noqa: F401


class Client(_client.Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stub = None  # the tests delete it after each test
""",
    "mindspore_serving/server/__init__.py": """
import sys
from mindserve.compat import register  # noqa: F401
from mindserve.compat.server import *  # noqa: F401,F403
from mindserve.compat.server import master  # noqa: F401
sys.modules[__name__ + ".register"] = register
sys.modules[__name__ + ".register.model"] = register.model
sys.modules[__name__ + ".master"] = master
""",
    "mindspore_serving/server/_servable_local.py": """
from mindserve.compat import server as _server


def merge_config(configs):
    return [config for group in _server._merged(list(configs)).values() for config in group.values()]
""",
    "mindspore_serving/server/distributed.py": """
def __getattr__(name):
    raise RuntimeError("distributed servables are out of scope in mindserve.compat")
""",
    "sitecustomize.py": """
import os
import re


def _install():
    import numpy as np
    from mindserve._execution import sources
    from mindserve._execution.local import CallableExecutor
    from mindserve._values import TensorSpec

    original = sources.MindirFile.open

    def open_stub(self, name, version_dir, device, where):
        path = self.located(version_dir)
        try:
            with open(path, "rb") as handle:
                head = handle.read(13)
        except OSError:
            head = b""
        if head != b"model content":
            return original(self, name, version_dir, device, where)
        base = os.path.basename(path)
        sub = "tensor_sub" in base
        found = re.search(r"tensor_(?:add|sub)_(\\d+)_(\\d+)\\.mindir", base)
        inputs, outputs = (int(found.group(1)), int(found.group(2))) if found else (2, 1)
        if inputs == 0 or outputs == 0:
            raise RuntimeError(f"Invalid input count or output count, input count: {inputs}, output count: {outputs}")

        def run(*arrays):
            y = np.array(arrays[0], np.float32)
            for x in arrays[1:]:
                y = y - x if sub else y + x
            return tuple([y] + [y + k for k in range(1, outputs)])

        executor = CallableExecutor(run)
        executor.input_specs = tuple(TensorSpec((2, 2), np.dtype(np.float32)) for _ in range(inputs))
        return executor

    sources.MindirFile.open = open_stub


_install()
""",
}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    tests = os.path.join(os.path.abspath(argv[0]), "tests", "ut", "python", "tests")
    if not os.path.isdir(tests):
        print(f"{tests} does not exist: give a checkout of mindspore-ai/serving")
        return 2
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    totals = {"passed": 0, "failed": 0, "error": 0}
    with tempfile.TemporaryDirectory(prefix="serving-uts-") as shim:
        for relative, text in SHIM.items():
            path = os.path.join(shim, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as handle:
                handle.write(text.lstrip())
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([shim, src]))
        for name in sorted(f for f in os.listdir(tests) if f.startswith("test_") and f.endswith(".py")):
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv[1:], name],
                cwd=tests,
                env=env,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
            print(f"{name}: {last}", flush=True)
            for count, kind in re.findall(r"(\d+) (passed|failed|error)", last):
                totals[kind] += int(count)
    print(f"total: {totals['passed']} passed, {totals['failed']} failed, {totals['error']} errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Running a check in a child process, where a crash inside MindSpore cannot take the command
line down with it.

The parent sends ``{"function": ..., "payload": ...}`` on the child's stdin; the child
(``python -m mindserve._cli.probe``) calls that function of a ``mindserve._cli`` module and
prints its JSON result on one line after a marker (on its own copy of stdout), then ends at
once, whatever threads the code it ran left behind. A child that dies (a signal, an exit
without a result) or overruns its time becomes a :class:`ProbeResult` that says so.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import os
import signal
import subprocess
import sys
from typing import Any

import attrs

_MARKER = "@@mindserve-probe-result@@ "
#: Lines of the child's stderr kept to explain a failure.
_TAIL = 12


@attrs.frozen
class ProbeResult:
    """What a child process returned (``value``), or why it returned nothing (``failure``)."""

    value: Any = None
    failure: str | None = None
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def stderr_tail(self, lines: int = _TAIL) -> list[str]:
        kept = [line for line in self.stderr.splitlines() if line.strip()]
        return kept[-lines:]


def _child_environment(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment, with the directory mindserve was imported from first on the path
    (so the child runs this mindserve, however the parent found it)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def run_probe(
    function: str, payload: Any = None, *, timeout: float = 300.0, env: dict[str, str] | None = None
) -> ProbeResult:
    """Call ``function`` (``"module:name"`` inside ``mindserve._cli``) with ``payload`` in a
    fresh interpreter; never raises for what happens in the child."""
    request = json.dumps({"function": function, "payload": payload})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mindserve._cli.probe"],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_child_environment(env),
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return ProbeResult(
            failure=f"did not finish within {timeout:g} s (the child was killed)", stderr=stderr
        )
    except OSError as exc:
        return ProbeResult(failure=f"could not start {sys.executable}: {exc}")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARKER):
            return ProbeResult(value=json.loads(line[len(_MARKER) :]), stderr=done.stderr)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        failure = f"the process crashed ({name})"
    else:
        failure = f"the process exited with status {done.returncode} without a result"
    return ProbeResult(failure=failure, stderr=done.stderr)


def _main() -> None:
    faulthandler.enable()  # a crash prints where it happened (the tail the report shows)
    # The result goes out on a private copy of stdout: the code the function imports may
    # close or replace sys.stdout (and may print: the result's line has its marker).
    result = os.dup(sys.stdout.fileno())
    request = json.loads(sys.stdin.read())
    module_name, _, name = request["function"].partition(":")
    if not module_name.startswith("mindserve._cli."):
        raise SystemExit(f"mindserve._cli.probe runs functions of mindserve._cli only; got {module_name!r}")
    function = getattr(importlib.import_module(module_name), name)
    value = function(request["payload"])
    _flush_quietly()
    line = ("\n" + _MARKER + json.dumps(value, default=str) + "\n").encode()
    while line:
        line = line[os.write(result, line) :]
    # Done: a thread the imported code started (not a daemon) must not keep the child alive.
    os._exit(0)


def _flush_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or replaced by something odd
            pass


if __name__ == "__main__":
    _main()

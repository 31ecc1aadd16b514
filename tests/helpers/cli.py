"""Running the ``mindserve`` command line as users run it (``python -m mindserve`` in a
subprocess), and reading its JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from paths import ROOT

SRC = os.path.join(ROOT, "src")


def run_cli(*args, shadow=None, env=None, cwd=None):
    """Run ``python -m mindserve ARGS``; ``shadow`` is a directory put first on PYTHONPATH."""
    paths = [str(shadow)] if shadow is not None else []
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, SRC]), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "mindserve", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )


def run_json(*args, **options):
    done = run_cli(*args, "--json", **options)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def findings(report, status=None, section=None):
    return [
        f
        for f in report["findings"]
        if (status is None or f["status"] == status) and (section is None or f["section"].startswith(section))
    ]


def texts(report, status=None, section=None):
    return "\n".join(f["text"] for f in findings(report, status, section))

"""``mindserve check DIR_OR_MODULE``: import a servable and check it without serving it.

Importing a servable runs its module's code, which may do anything (exit, start a thread
that never ends, loop, crash, close stdout): so this process never imports it. The target
is imported and checked in a child process bounded by ``--timeout`` (:mod:`.inspection`);
a child that dies or overruns is a FAIL with what it printed last. ``--load`` then loads,
warms up and runs each version in a child process of its own (:mod:`.loading`).
"""

from __future__ import annotations

import os
import time

from mindserve._cli.inspection import target_fix
from mindserve._cli.loading import load_version
from mindserve._cli.probe import run_probe
from mindserve._cli.report import Report
from mindserve._cli.target import TARGET


def check(
    target: str, only: str | None, load: bool, dec_key: bytes | None, dec_mode: str, timeout: float
) -> Report:
    report = Report("check")
    report.data.update(target=os.path.abspath(target) if os.path.exists(target) else target, servables=[])
    payload = {
        "target": target,
        "servable": only,
        "dec_key": dec_key.hex() if dec_key is not None else None,
        "dec_mode": dec_mode,
        "deadline": time.time() + timeout,
    }
    result = run_probe("mindserve._cli.inspection:probe_check", payload, timeout=timeout, env={"GLOG_v": "3"})
    if not result.ok:
        report.add(
            TARGET,
            "fail",
            f"{target}: importing and checking it in a child process failed: {result.failure}",
            fix=f"{target_fix(target)}; importing it must return (no exit, endless loop or crash at import)",
            detail=result.stderr_tail(),
        )
        return report
    for finding in result.value["findings"]:  # shown as they are added, on the command line
        report.add(finding["section"], finding["status"], finding["text"], finding["fix"], finding["detail"])
    report.data["servables"] = result.value["data"]["servables"]
    if load:
        for data in report.data["servables"]:
            if data["checkable"]:
                for version in data["versions"]:
                    load_version(report, target, data["name"], version, dec_key, dec_mode, timeout, data)
    return report

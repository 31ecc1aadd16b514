"""``mindserve check`` and ``mindserve info`` on hostile input: a module that exits, hangs,
crashes or closes stdout at import; files that hold no graph. Each is a FAIL with exit
status 1 and a report, never a hang, a crash, a traceback or a false "ok"."""

from __future__ import annotations

import json
import time

import pytest

from cli import findings, run_cli, run_json, texts

HOSTILE = {
    "exits": ("import os\nos._exit(0)\n", "exited with status 0 without a result"),
    "thread": (
        "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,)).start()\n",
        "defines no mindserve.Servable",
    ),
    "loops": ("while True:\n    pass\n", "did not finish within 1 s"),
    "segfault": ("import ctypes\nctypes.string_at(0)\n", "crashed (SIGSEGV)"),
    "closes_stdout": ("import sys\nsys.stdout.close()\n", "defines no mindserve.Servable"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_check_reports_a_module_that_exits_hangs_crashes_or_closes_stdout_at_import(tmp_path, kind):
    source, expected = HOSTILE[kind]
    module = tmp_path / f"{kind}.py"
    module.write_text(source)
    started = time.monotonic()
    # a module that loops is given 1 s; the others finish, each given 5 s to import
    code, report = run_json("check", module, "--timeout", "1" if kind == "loops" else "5")
    assert time.monotonic() - started < 120  # a hang guard: --timeout bounds the import
    assert code == 1, report
    assert expected in texts(report, "fail"), report
    assert findings(report, "fail")[0]["section"] == "Target"


def test_check_of_a_module_with_a_live_thread_still_checks_its_servable(tmp_path, exported):
    """A servable module that starts a non-daemon thread at import is checked as usual."""
    import os

    directory = os.path.join(exported["root"], "mlp")
    module = tmp_path / "threaded.py"
    module.write_text(
        "import threading, time\nimport mindserve\n"
        "threading.Thread(target=time.sleep, args=(3600,)).start()\n"
        f"svc = mindserve.Servable('mlp', directory={directory!r})\nmlp = svc.model('mlp.mindir')\n"
        "@svc.method(outputs='logits')\ndef predict(x):\n    return mlp(x)\n"
    )
    code, report = run_json("check", module, "--timeout", "60")
    assert code == 0, report
    assert "Python file, defines 'mlp'" in texts(report, "ok")
    assert "version 1: model 'mlp'" in texts(report, "ok")


@pytest.mark.parametrize("content", [b"", b"\x08\x01"], ids=["empty", "two bytes"])
def test_info_on_a_file_with_no_graph_is_a_fail(tmp_path, content):
    model = tmp_path / "empty.mindir"
    model.write_bytes(content)
    code, report = run_json("info", model)
    assert code == 1, report
    assert "holds no MindIR graph" in texts(report, "fail")


def test_check_output_is_one_json_document_even_when_the_module_prints(tmp_path):
    module = tmp_path / "chatty.py"
    module.write_text("print('hello from the module')\nimport mindserve\n")
    done = run_cli("check", module, "--json", "--timeout", "60")
    report = json.loads(done.stdout)
    assert done.returncode == 1 and "defines no mindserve.Servable" in texts(report, "fail")

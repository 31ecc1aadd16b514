"""Actionable warnings reach a user who configured no logging, and only the log of an
application that did (mindserve._observe.visible; docs/running.md#warnings)."""

import logging
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

import mindserve
from mindserve._observe import visible

SRC = os.path.dirname(os.path.dirname(mindserve.__file__))

SCRIPT = """
import logging, sys
{setup}
import mindserve
from mindserve._observe.visible import warn_definition, warn_event

log = logging.getLogger("mindserve")
warn_definition(log, "model %s never batches", "m")  # the user's line: 8
warn_event(log, logging.WARNING, "worker %d died; restarting it", 0)
warn_event(log, logging.ERROR, "worker %d given up", 0)
warn_event(log, logging.INFO, "worker %d restarted", 0)
"""


def run(setup: str) -> str:
    """The stderr of a fresh interpreter that issues each kind of warning."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(setup=setup))],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": SRC, "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_with_no_logging_configured_every_warning_is_shown():
    err = run("")
    assert "<string>:8: MindServeWarning: model m never batches" in err  # at the user's line
    assert "mindserve: warning: worker 0 died; restarting it" in err
    assert "mindserve: error: worker 0 given up" in err
    assert "restarted" not in err  # progress is INFO: for those who asked


def test_with_logging_configured_they_go_to_the_log_only():
    err = run("logging.basicConfig(format='LOG %(levelname)s %(message)s')")
    lines = err.splitlines()
    assert lines == [
        "LOG WARNING model m never batches",
        "LOG WARNING worker 0 died; restarting it",
        "LOG ERROR worker 0 given up",
    ]


def test_a_level_set_on_the_mindserve_logger_is_a_configuration():
    assert run("logging.getLogger('mindserve').setLevel(logging.CRITICAL)") == ""


def test_logging_configured_follows_handlers_and_propagation(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    child = logging.getLogger("mindserve.test_visible")
    assert not visible.logging_configured(child)  # only mindserve's NullHandler
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler()])
    assert visible.logging_configured(child)
    monkeypatch.setattr(logging.getLogger("mindserve"), "propagate", False)
    assert not visible.logging_configured(child)  # the root's handler is not reached


def test_the_warning_category_is_public():
    assert issubclass(mindserve.MindServeWarning, UserWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(visible, "logging_configured", lambda logger: False)
            visible.warn_definition(logging.getLogger("mindserve"), "a problem")
    assert [(w.category, w.filename) for w in caught] == [(mindserve.MindServeWarning, __file__)]

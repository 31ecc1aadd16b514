"""What a fresh interpreter sees: ``import mindserve`` stays light (no MindSpore, no optional
extra), a missing extra says how to install it, and the library prints no log unless asked."""

import subprocess
import sys

from extras import install_hint_when_missing

# -- import mindserve stays light ---------------------------------------------------------------


def test_import_does_not_import_mindspore():
    """Importing mindserve must not import MindSpore (it is imported when a model loads),
    nor the test kit and pytest, nor Ray."""
    code = (
        "import sys, mindserve; "
        "print([m in sys.modules for m in ('mindspore', 'mindserve.testing', 'pytest', 'ray', 'mindserve.ray')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[False, False, False, False, False]"


def test_import_mindserve_does_not_import_opentelemetry():
    code = "import sys, mindserve; print('opentelemetry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_import_mindserve_does_not_import_prometheus_client():
    code = "import sys, mindserve; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_importing_mindserve_imports_neither_the_app_nor_starlette():
    code = "import sys, mindserve; print([m for m in ('mindserve.http', 'starlette', 'uvicorn') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- a missing extra ------------------------------------------------------------------------------


def test_without_the_opentelemetry_extra_the_error_says_how_to_install_it(tmp_path):
    assert "pip install 'mindserve[opentelemetry]'" in install_hint_when_missing(
        tmp_path, "opentelemetry", "mindserve.opentelemetry"
    )


def test_without_the_prometheus_extra_the_error_says_how_to_install_it(tmp_path):
    assert "pip install 'mindserve[prometheus]'" in install_hint_when_missing(
        tmp_path, "prometheus_client", "mindserve.prometheus"
    )


# -- logging ----------------------------------------------------------------------------------------


def test_a_library_logs_nothing_unless_the_application_configures_logging(tmp_path):
    """A NullHandler on the 'mindserve' logger: no last-resort printing of a failed load."""
    script = tmp_path / "quiet.py"
    script.write_text(
        "import mindserve\n"
        f"svc = mindserve.Servable('s', directory=r'{tmp_path}')\n"
        "svc.model('missing.mindir')\n"
        "svc.add_method(lambda x: x, name='m')\n"
        "try:\n"
        "    mindserve.Runtime().start(svc)\n"
        "except mindserve.MindServeError as exc:\n"
        "    print('raised', type(exc).__name__)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().startswith("raised")
    assert "failed to load" not in done.stderr, done.stderr

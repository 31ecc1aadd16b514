"""What a fresh interpreter sees: ``import mindserve`` stays light (no MindSpore, no optional
extra), a missing extra says how to install it, and the library prints no log unless asked."""

import subprocess
import sys

import pytest

from extras import install_hint_when_missing

# -- import mindserve stays light ---------------------------------------------------------------


@pytest.mark.parametrize(
    "modules",
    [
        ("mindspore", "mindserve.testing", "pytest", "ray", "mindserve.ray"),
        ("opentelemetry", "mindserve.opentelemetry"),
        ("prometheus_client", "mindserve.prometheus"),
        ("mindserve.http", "starlette", "uvicorn"),
    ],
    ids=["mindspore-testkit-pytest-ray", "opentelemetry", "prometheus", "http"],
)
def test_import_mindserve_imports_no_model_runtime_test_kit_or_extra(modules):
    """Importing mindserve must not import MindSpore (it is imported when a model loads), nor
    the test kit and pytest, nor any optional extra (Ray, OpenTelemetry, Prometheus, HTTP)."""
    code = f"import sys, mindserve; print([m for m in {modules!r} if m in sys.modules])"
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

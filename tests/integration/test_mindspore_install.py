"""A missing, broken or unsupported MindSpore is reported clearly, before anything fails inside it."""

import subprocess
import sys
import textwrap
import warnings

import pytest

import mindserve
from mindserve._execution.mindspore import check_version, parse_version

START_A_MINDIR_SERVABLE = """
import mindserve
open("m.mindir", "wb").write(b"a model file")
svc = mindserve.Servable("m")
model = svc.model("m.mindir")
svc.add_method(lambda x: model(x), name="f")
echo = mindserve.Servable("echo")
stage = echo.add_stage(lambda x: x, name="same")
echo.add_method(lambda x: stage(x), name="f")
with mindserve.Runtime() as rt:
    print(rt.infer(rt.start(echo).name, "f", [{"x": 1}]))
    try:
        rt.start(svc)
    except mindserve.MindSporeUnavailableError as exc:
        print(type(exc).__name__, isinstance(exc, ImportError))
        print(exc)
"""


def run_python(code, tmp_path, fake_mindspore=None):
    """Run ``code`` in a fresh interpreter, with a fake ``mindspore`` package if given."""
    env_path = str(tmp_path)
    if fake_mindspore is not None:
        package = tmp_path / "mindspore"
        package.mkdir()
        (package / "__init__.py").write_text(textwrap.dedent(fake_mindspore))
    prelude = f"import sys; sys.path.insert(0, {env_path!r})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


def test_missing_mindspore_says_what_to_install(tmp_path):
    """Without MindSpore, a callable servable still runs and a MindIR servable says what to install."""
    code = "import sys; sys.modules['mindspore'] = None\n" + START_A_MINDIR_SERVABLE
    out = run_python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[{'output': 1}]"
    assert lines[1] == "MindSporeUnavailableError True"
    assert "MindSpore is not installed" in lines[2]
    assert f"pip install '{mindserve.MINDSPORE_REQUIREMENT}'" in lines[2]


def test_broken_mindspore_says_how_to_repair(tmp_path):
    fake = "raise OSError('libmindspore.so: cannot open shared object file')"
    out = run_python(START_A_MINDIR_SERVABLE, tmp_path, fake_mindspore=fake)
    assert out.returncode == 0, out.stderr
    assert "MindSpore is installed but fails to import (OSError: libmindspore.so" in out.stdout
    assert "pip install --force-reinstall" in out.stdout


def test_old_mindspore_warns_when_first_imported(tmp_path):
    code = textwrap.dedent(
        """
        import warnings
        from mindserve._execution import mindspore as _mindspore
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _mindspore.import_mindspore()
        print([type(w.message).__name__ for w in caught])
        print(caught[0].message)
        """
    )
    out = run_python(code, tmp_path, fake_mindspore="__version__ = '1.8.1'")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['MindSporeVersionWarning']"
    assert lines[1].startswith("MindSpore 1.8.1 is outside the range mindserve supports")


@pytest.mark.parametrize(
    "version, supported", [("2.10.0", True), ("2.3.0rc1", True), ("2.2.14", False), ("3.0.0", False)]
)
def test_version_range(version, supported):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_version(version) is supported
    assert bool(caught) is not supported


def test_parse_version():
    assert parse_version("2.10.0rc1") == (2, 10, 0)
    assert parse_version("unknown") is None


def test_the_installed_mindspore_is_a_tested_version():
    """The suite runs against the versions _requirements.py declares."""
    import mindspore

    assert mindspore.__version__ in mindserve.TESTED_MINDSPORE_VERSIONS


def test_runtime_joins_a_mindspore_that_already_ran(tmp_path):
    """A program that ran MindSpore before starting a runtime keeps working on that device."""
    code = textwrap.dedent(
        """
        import numpy as np, mindspore as ms, mindserve
        net = ms.nn.Dense(4, 2)
        net(ms.Tensor(np.ones((1, 4), np.float32)))
        svc = mindserve.Servable("c")
        m = svc.model(net, name="net")
        svc.add_method(lambda x: m(x), name="f")
        with mindserve.Runtime() as rt:
            print(rt.start(svc).device, rt.infer("c", "f", [{"x": np.ones(4, np.float32)}])[0]["output"].shape)
        try:
            mindserve.Runtime(device_target="Ascend").start(svc)
        except mindserve.DeviceError as exc:
            print(exc)
        """
    )
    out = run_python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "CPU:0 (2,)"
    assert lines[1].startswith("this process already runs MindSpore on CPU:0")

"""The ``mindserve`` command line, run as users run it: ``python -m mindserve`` in a subprocess,
on real MindIR files, with MindSpore missing, broken or too old simulated through PYTHONPATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import mindserve
from cli import SRC, findings, run_cli, run_json, texts
from paths import ROOT, TESTS
from reference import ENC_KEY

# -- doctor --------------------------------------------------------------------------


def test_doctor_here_finds_nothing_wrong():
    code, report = run_json("doctor")
    assert code == 0, report
    assert report["ok"] and report["problems"] == 0
    ok = texts(report, "ok")
    assert f"MindSpore {mindserve.TESTED_MINDSPORE_VERSIONS[0]} imports" in ok
    assert "_c_expression" in ok and "loads" in ok
    assert "CPU: MindSpore runs a network on it" in ok
    assert report["data"]["mindspore"]["supported"] is True
    assert report["data"]["python"]["supported"] == mindserve._requirements.PYTHON_REQUIREMENT
    assert report["data"]["threads"]["cpu_count"] == os.cpu_count()


def test_doctor_prints_each_finding_as_it_is_found(monkeypatch, capsys):
    """Each line is on stdout before the next slow step starts; each slow step says what it
    does on stderr (in-process, with the slow steps replaced by recorders)."""
    from mindserve._cli import doctor, report
    from mindserve._cli.main import main

    monkeypatch.setattr(report, "LIVE", report.Live())  # main sets it; restored after
    seen = {}

    def native(rep, package, timeout):
        seen["native"] = capsys.readouterr()
        rep.add(doctor.NATIVE, "ok", "native libraries load")
        return True

    def imported(rep, package, timeout, devices):
        seen["import"] = capsys.readouterr()
        return None

    monkeypatch.setattr(doctor, "_find_mindspore", lambda rep: "/somewhere/mindspore")
    monkeypatch.setattr(doctor, "_check_native", native)
    monkeypatch.setattr(doctor, "_check_import", imported)
    assert main(["doctor"]) in (0, 1)
    assert report.LIVE == report.Live()  # only for the command's own report
    assert seen["native"].out.startswith("Python\n  ")  # the Python findings, before the native step
    assert (
        seen["native"].err
        == "mindserve doctor: loading MindSpore's native libraries in a child process ...\n"
    )
    assert seen["import"].out == "MindSpore\n  ok    native libraries load\n"
    assert "importing MindSpore in a child process and asking it for its devices ..." in seen["import"].err
    rest = capsys.readouterr().out
    assert "Threads" in rest and rest.rstrip().splitlines()[-1].startswith("mindserve doctor: ")
    assert "Python" not in rest  # not written twice


def test_doctor_without_mindspore_says_what_to_install(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['mindspore'] = None\n")
    done = run_cli("doctor", shadow=tmp_path, env={"OMP_NUM_THREADS": "0"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  MindSpore is not installed for" in done.stdout
    assert f"fix: pip install '{mindserve.MINDSPORE_REQUIREMENT}'" in done.stdout
    assert "OMP_NUM_THREADS='0' is not a positive number of threads" in done.stdout
    assert done.stdout.rstrip().endswith("mindserve doctor: 2 problems.")


def fake_mindspore(root, init):
    package = root / "mindspore"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(init))
    return package


def test_doctor_broken_mindspore_says_how_to_repair(tmp_path):
    fake_mindspore(tmp_path, "raise OSError('libmindspore.so: cannot open shared object file')")
    code, report = run_json("doctor", shadow=tmp_path)
    assert code == 1
    (broken,) = [f for f in findings(report, "fail", "MindSpore") if "fails to import" in f["text"]]
    assert "OSError: libmindspore.so: cannot open shared object file" in broken["text"]
    assert "pip install --force-reinstall" in broken["fix"]
    (native,) = [f for f in findings(report, "fail", "MindSpore") if "install is incomplete" in f["text"]]
    assert "neither lib/libmindspore.so nor _c_expression*.so" in native["text"]
    assert not findings(report, section="Devices")  # nothing more is asked of a MindSpore that fails


def test_doctor_old_mindspore_is_outside_the_range(tmp_path):
    fake_mindspore(tmp_path, "__version__ = '2.2.14'")
    code, report = run_json("doctor", shadow=tmp_path)
    assert code == 1
    (old,) = [f for f in findings(report, "fail") if "2.2.14" in f["text"]]
    assert "outside the range mindserve supports" in old["text"]
    assert old["fix"] == f"pip install '{mindserve.MINDSPORE_REQUIREMENT}'"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler to build a library")
def test_doctor_names_the_shared_library_that_is_missing(tmp_path):
    """A native library whose dependency is gone: the loader's error and ldd name it."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "needed.c").write_text("int needed(void) { return 1; }\n")
    (build / "fake.c").write_text("int needed(void);\nint fake(void) { return needed(); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", build / "libneeded.so", build / "needed.c"], check=True)
    package = fake_mindspore(
        tmp_path / "shadow", "raise ImportError('libneeded.so: cannot open shared object file')"
    )
    extension = package / "_c_expression.cpython-311-x86_64-linux-gnu.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", extension, build / "fake.c", f"-L{build}", "-lneeded"], check=True
    )
    (build / "libneeded.so").unlink()
    code, report = run_json("doctor", shadow=tmp_path / "shadow")
    assert code == 1
    (native,) = [f for f in findings(report, "fail", "MindSpore") if "does not load" in f["text"]]
    assert native["text"].startswith(f"{extension} does not load: ")
    assert native["text"].endswith("missing: libneeded.so")
    assert native["fix"].startswith("install the system package that provides libneeded.so, or add")
    assert report["data"]["native"]["errors"][str(extension)]["missing"] == ["libneeded.so"]


def test_thread_settings(monkeypatch):
    from mindserve._cli.doctor import _check_threads, _ranges
    from mindserve._cli.report import Report

    allowed = len(os.sched_getaffinity(0))
    for value, status in [(str(allowed), "ok"), (str(allowed + 1), "warn"), ("x", "fail")]:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        report = Report("doctor")
        _check_threads(report)
        assert report.findings[-1].status == status, (value, report.findings[-1])
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


# -- info ----------------------------------------------------------------------------


def inputs_of(report):
    return [(i["name"], i["dtype"], i["shape"]) for i in report["data"]["inputs"]]


def test_info_dynamic_batch(exported):
    code, report = run_json("info", exported["paths"]["mlp_dynamic"])
    assert code == 0
    assert inputs_of(report) == [("x", "float32", [None, 16])]
    assert [(o["dtype"], o["shape"]) for o in report["data"]["outputs"]] == [("float32", [None, 10])]
    assert report["data"]["encrypted"] is False
    assert report["data"]["batch"] == {"kind": "dynamic", "fixed_size": None}
    assert "lengths" not in report["data"]


def test_info_says_how_variable_lengths_batch_and_how_many_graphs(text_models):
    code, report = run_json("info", os.path.join(text_models["root"], "encoder", "1", "encoder.mindir"))
    assert code == 0
    assert report["data"]["lengths"] == {
        "inputs": [0, 1],
        "buckets": [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512],
    }
    (note,) = [f for f in report["findings"] if f["section"] == "Lengths"]
    assert "7 batch sizes x 13 lengths = 91 graphs" in note["text"] and "Padding(mask=" in note["fix"]


def test_batch_dimension_says_what_it_means():
    from mindserve._cli.info import batch_dimension
    from mindserve._values import TensorSpec

    def spec(*shape):
        return TensorSpec(shape, "float32")

    kind, text, size, fix = batch_dimension([spec(4, 16)], ["x"])
    assert (kind, size) == ("fixed", 4)
    assert "mindserve always runs batches of exactly 4, padding a partial batch up to 4" in text
    assert "mindspore.Tensor(shape=[None, ...])" in fix
    kind, text, size, fix = batch_dimension([spec(1, 16)], ["x"])
    assert (kind, size) == ("fixed", 1) and "nothing is batched across callers" in text
    kind, text, _, fix = batch_dimension([spec(None, 3), spec(3)], ["x", "scale"])
    assert kind == "mixed" and "(x: None, scale: 3)" in text and "without_batch_dim_inputs" in fix
    kind, text, _, fix = batch_dimension([spec(None, 3), spec()], ["x", "k"])
    assert kind == "none" and "input 'k' is a scalar" in text and "without_batch_dim_inputs=[1]" in fix
    assert batch_dimension([], [])[0] == "none"


def test_info_encrypted(exported, tmp_path):
    path = exported["paths"]["mlp_encrypted"]
    code, report = run_json("info", path)
    assert code == 0 and report["data"]["encrypted"] is True and report["data"]["inputs"] is None
    assert "cannot be read without the key" in texts(report, "warn")
    key_file = tmp_path / "key"
    key_file.write_bytes(ENC_KEY)
    code, report = run_json("info", path, "--dec-key-file", key_file)
    assert code == 0 and inputs_of(report) == [("x", "float32", [None, 16])]
    code, report = run_json("info", path, "--dec-key", "hex:" + (b"X" * 16).hex())
    assert code == 1
    (wrong,) = findings(report, "fail")
    assert "cannot decrypt" in wrong["text"] and "--dec-key and --dec-mode" in wrong["fix"]


def test_info_on_bad_files(tmp_path):
    junk = tmp_path / "junk.mindir"
    junk.write_bytes(b"\xff" * 64)
    code, report = run_json("info", junk)
    assert code == 1
    assert "cannot read the file" in texts(report, "fail")
    code, report = run_json("info", tmp_path / "absent.mindir")
    assert code == 1 and "does not exist" in texts(report, "fail")
    done = run_cli("info", junk, "--dec-key", "short")
    assert done.returncode == 2 and "must be 16, 24 or 32 bytes long; got 5 bytes" in done.stderr


# -- check ---------------------------------------------------------------------------

GOOD = """
import mindserve

svc = mindserve.Servable("mlp", directory={directory!r})
mlp = svc.model("mlp.mindir")

@svc.method(outputs="logits")
def predict(x):
    return mlp(x)

@svc.stage
def double(x):
    return x * 2

@svc.method
def doubled(x):
    return mlp(double(x))

@svc.stage(outputs=2)
def explain(logits):
    return {{"top": int(logits.argmax())}}, {{int(logits.argmax())}}

@svc.method(outputs=["top", "classes"])
def explained(x):
    return explain(mlp(x))
"""


def test_check_and_load_a_good_servable(exported, tmp_path):
    module = tmp_path / "good.py"
    module.write_text(GOOD.format(directory=os.path.join(exported["root"], "mlp")))
    code, report = run_json("check", module, "--load", env={"MINDSERVE_WARM_UP": "0"})
    assert code == 0, report
    (servable,) = report["data"]["servables"]
    assert servable["versions"] == [1, 2]
    assert [m["name"] for m in servable["methods"]] == ["predict", "doubled", "explained"]
    for version in (1, 2):
        ran = texts(report, "ok", f"Servable 'mlp' version {version} (--load)")
        assert (
            "method 'predict' ran on {'x': float32 array of shape (16,)}: logits: float32 array of shape (10,)"
            in ran
        )
        skipped = texts(report, "warn", f"Servable 'mlp' version {version} (--load)")
        assert "method 'doubled' not run: input 'x' goes to stage 'double' first" in skipped
        # an output that runs in process but that mindserve.http.RestApp cannot send
        assert (
            "method 'explained': output 'classes' (a set) cannot be sent by mindserve.http.RestApp: a "
            "builtins.set, which JSON cannot hold" in skipped
        )
    assert "batches of up to 64, padded to [1, 2, 4, 8, 16, 32, 64]" in texts(report, "ok", "Servable 'mlp'")
    (model,) = report["data"]["servables"][0]["loaded"]["1"]["models"]
    assert (model["graphs"], model["warm_up_seconds"]) == (0, 0)  # no warm-up here: nothing compiled


BROKEN = """
import mindserve

two = mindserve.Servable("two_inputs", directory={directory!r})
mlp = two.model("mlp.mindir")
two.add_method(lambda x, y: mlp(x, y), name="f")

many = mindserve.Servable("outputs", directory={directory!r})
one = many.model("mlp.mindir", outputs=2)
many.add_method(lambda x: one(x), name="f", outputs=["a", "b"])

chained = mindserve.Servable("chained", directory={directory!r})
first = chained.model("mlp.mindir")
chained.add_method(lambda x: first(first(x)), name="twice")

locked = mindserve.Servable("locked", directory={directory!r})
secret = locked.model("enc.mindir")
locked.add_method(lambda x: secret(x), name="f")

absent = mindserve.Servable("absent", directory={directory!r})
gone = absent.model("gone.mindir")
absent.add_method(lambda x: gone(x), name="f")
"""


def test_check_finds_every_problem_without_loading(exported, tmp_path):
    version = tmp_path / "models" / "1"
    version.mkdir(parents=True)
    shutil.copy(exported["paths"]["mlp_dynamic"], version / "mlp.mindir")
    shutil.copy(exported["paths"]["mlp_encrypted"], version / "enc.mindir")
    module = tmp_path / "broken.py"
    module.write_text(BROKEN.format(directory=str(tmp_path / "models")))
    done = run_cli("check", module)
    assert done.returncode == 1
    out = done.stdout
    assert "servable 'two_inputs' version 1: model 'mlp' takes 1 input, but a method calls it with 2" in out
    assert "version 1: model 'mlp' returns 1 output, but is declared with outputs=2" in out
    assert (
        "method 'twice': output 0 of model 'mlp' (float32 array of shape (10,)) goes to input 0 of model "
        "'mlp', which takes float32 array of shape (16,)" in out
    )
    assert "enc.mindir is encrypted, and the model declares no dec_key" in out
    assert "gone.mindir does not exist" in out
    assert out.rstrip().endswith("mindserve check: 5 problems.")


def test_check_reports_a_method_that_fails_and_a_crash(exported, tmp_path):
    """A method that raises is a problem; a child that crashes loading or running a version is
    reported, and the check goes on with the next servable."""
    shutil.copy(exported["paths"]["mlp_dynamic"], tmp_path / "mlp.mindir")
    (tmp_path / "failing.py").write_text(
        textwrap.dedent(
            """
            import os, signal
            import mindserve

            svc = mindserve.Servable("crashing")
            mlp = svc.model("mlp.mindir")

            @svc.stage
            def crash(y):
                os.kill(os.getpid(), signal.SIGSEGV)

            svc.add_method(lambda x: crash(mlp(x)), name="crashes")

            failing = mindserve.Servable("failing")
            other = failing.model("mlp.mindir")

            @failing.stage
            def boom(y):
                raise ValueError("no good")

            failing.add_method(lambda x: boom(other(x)), name="fails")
            """
        )
    )
    # A module name, imported from the current directory (model paths are relative to it).
    code, report = run_json("check", "failing", "--load", env={"MINDSERVE_WARM_UP": "0"}, cwd=tmp_path)
    assert code == 1 and report["data"]["target"] == "failing"
    assert [f["section"] for f in findings(report, "fail")] == [
        "Servable 'crashing' version 1 (--load)",
        "Servable 'failing' version 1 (--load)",
    ]
    crashed, failed = (f["text"] for f in findings(report, "fail"))
    assert crashed == "loading and running it in a child process failed: the process crashed (SIGSEGV)"
    assert failed.startswith(
        "method 'fails' failed on a generated instance ({'x': float32 array of shape (16,)})"
    )
    assert "no good" in failed


def test_check_bad_targets(tmp_path):
    (tmp_path / "raises.py").write_text("import mindserve\n\nx = 1 / 0\n")
    code, report = run_json("check", tmp_path / "raises.py")
    assert code == 1
    (failed,) = findings(report, "fail")
    assert "importing it raised ZeroDivisionError: division by zero" in failed["text"]
    assert failed["detail"] == [f"{tmp_path / 'raises.py'}:3: x = 1 / 0"]
    (tmp_path / "empty.py").write_text("import mindserve\n")
    code, report = run_json("check", tmp_path / "empty.py")
    assert code == 1 and "defines no mindserve.Servable" in texts(report, "fail")
    (tmp_path / "undefined.py").write_text("import mindserve\nsvc = mindserve.Servable('s')\n")
    code, report = run_json("check", tmp_path / "undefined.py")
    assert code == 1 and "servable 's' has no methods" in texts(report, "fail")
    code, report = run_json("check", tmp_path)
    assert code == 1 and "holds no servable_config.py" in texts(report, "fail")
    code, report = run_json("check", tmp_path / "undefined.py", "--servable", "t")
    assert code == 1 and "no servable named 't'; found ['s']" in texts(report, "fail")
    done = run_cli("check", tmp_path / "absent.py")
    assert done.returncode == 2 and "absent.py does not exist" in done.stderr


def test_check_a_mindspore_serving_servable(tmp_path):
    from models import Add, dynamic, export

    shutil.copytree(os.path.join(TESTS, "compat_servables", "add"), tmp_path / "add")
    export(Add(), str(tmp_path / "add" / "1" / "tensor_add.mindir"), dynamic((3,)), dynamic((3,)))
    done = run_cli("check", tmp_path, "--load", "--json", env={"MINDSERVE_WARM_UP": "0"})
    code, report = done.returncode, json.loads(done.stdout)
    assert code == 0, report
    # The slow step says what it does as it starts (on stderr: stdout is the JSON report).
    assert (
        "mindserve check: loading servable 'add' version 1 in a child process (load, warm-up, a test call) ..."
        in done.stderr.splitlines()
    )
    assert "MindSpore Serving servable directory" in texts(report, "ok", "Target")
    ran = texts(report, "ok", "Servable 'add' version 1 (--load)")
    assert (
        "method 'add_common' ran on {'x1': float32 array of shape (3,), 'x2': float32 array of shape (3,)}"
        in ran
    )
    assert "method 'add_cast' not run" in texts(report, "warn")
    (tmp_path / "add" / "1" / "tensor_add.mindir").unlink()
    code, report = run_json("check", tmp_path / "add")
    assert code == 1 and "tensor_add.mindir does not exist" in texts(report, "fail")


# -- packaging -----------------------------------------------------------------------


def test_console_script_and_lazy_imports(capsys):
    """setup.py installs the ``mindserve`` script and states the Python range _requirements.py
    holds; importing mindserve imports neither the command line nor MindSpore."""
    from distutils.core import run_setup

    from mindserve._cli.main import main

    distribution = run_setup(os.path.join(ROOT, "setup.py"), stop_after="init")
    assert distribution.entry_points["console_scripts"] == ["mindserve = mindserve._cli.main:main"]
    assert str(distribution.python_requires) == mindserve._requirements.PYTHON_REQUIREMENT
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == f"mindserve {mindserve.__version__}\n"
    code = "import sys, mindserve; print(sorted(m for m in sys.modules if m.startswith(('mindspore', 'mindserve._cli'))))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=SRC)
    )
    assert done.stdout == "[]\n", done.stderr

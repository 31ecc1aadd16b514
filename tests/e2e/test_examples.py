"""The examples (scripts and notebook) and the README's code run as a new user would run them."""

import os
import re
import subprocess
import sys

import pytest

import notebooks
from paths import ROOT

pytestmark = pytest.mark.warm_up  # run as a user would: warm-up as the environment says


def test_quickstart_runs_and_classifies(tmp_path):
    script = os.path.join(ROOT, "examples", "quickstart.py")
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = subprocess.run(
        [sys.executable, script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert out.returncode == 0, out.stderr
    assert not list(temp.iterdir()), "the quickstart leaves nothing in the temporary directory"
    lines = out.stdout.splitlines()
    assert lines[0] == "serving rows version 1 on CPU:0"
    for line in lines[1:6]:
        row, label = re.match(r"bright row (\d): label (\d) \(p=", line).groups()
        assert row == label
    assert lines[6] == "good instance: label 3"
    assert lines[7].startswith("bad instance: servable 'rows' version 1, method 'classify', instance 1: ")


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def test_readme_python_runs(tmp_path):
    """Every ```python block of the README runs, in order, in one fresh interpreter."""
    blocks = re.findall(r"```python\n(.*?)```", readme(), re.S)
    assert blocks
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr


def test_readme_gives_exactly_two_commands_and_ci_runs_the_second():
    commands = re.findall(r"```sh\n(.*?)```", readme(), re.S)
    assert len(commands) == 2
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    assert commands[1].strip() in ci


def test_workers_example_serves_the_same_results_from_two_workers(tmp_path):
    script = os.path.join(ROOT, "examples", "workers.py")
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["worker 0", "worker 1"]
    assert all(", ready, " in line for line in lines[:2])
    assert lines[2] == "same results: True"
    assert lines[3].startswith("in-process ")


def test_the_pythons_promised_are_those_mindspore_has_wheels_for():
    """MindSpore 2.10 publishes wheels for Python 3.10 to 3.12: _requirements.py (which setup.py
    reads), setup.py's classifiers and the README say so."""
    from mindserve._requirements import PYTHON_REQUIREMENT

    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as handle:
        setup = handle.read()
    assert PYTHON_REQUIREMENT == ">=3.10,<3.13"
    assert 'python_requires=_read("_requirements.py", "PYTHON_REQUIREMENT")' in setup
    for minor in ("3.10", "3.11", "3.12"):
        assert f'"Programming Language :: Python :: {minor}"' in setup
    assert "Python 3.10, 3.11 or 3.12" in readme()


def test_the_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(os.path.join(ROOT, "examples", "quickstart.ipynb"), as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_notebook_runs_cell_by_cell_and_leaves_nothing_behind(tmp_path):
    """examples/quickstart.ipynb in a fresh kernel: every cell runs, and says what the text says."""
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(os.path.join(ROOT, "examples", "quickstart.ipynb"), as_version=4)
    cwd, temp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temp.mkdir()
    notebooks.execute(notebook, cwd, env={**os.environ, "TMPDIR": str(temp)})
    said = {}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            said[cell.source.splitlines()[0]] = notebooks.text(cell)
    assert said["rt = mindserve.Runtime()"].startswith("serving weather version 1 on CPU:0")
    assert "'label': 'rainy'" in said["rt = mindserve.Runtime()"]
    assert said["import asyncio"].strip() == "['sunny', 'rainy', 'stormy']"  # top-level await
    assert "model weather: " in said["for running in rt.status():"]
    assert said["export_version(2, [[1.0, -1.0, -2.0, 2.0],"].strip() == "default version 2: sunny -> stormy"
    mixed = said["mixed = [days[0], day(0.5, 1.7, 0.2, 0.5), days[2]]"].splitlines()
    assert [line.split()[0] for line in mixed] == ["dict", "StageError", "dict"]
    assert mixed[1].startswith("StageError servable 'weather' version 2, method 'predict', instance 1: ")
    assert "failed instances: [1]" in said["try:"]
    assert said["rt.close()"].strip() == "False"
    assert not list(temp.iterdir()), "the notebook leaves nothing in the temporary directory"
    assert not list(cwd.iterdir()), "the notebook leaves nothing in its working directory"

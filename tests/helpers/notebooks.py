"""Running a notebook in a fresh Jupyter kernel, as Jupyter would (nbclient and ipykernel)."""

from __future__ import annotations

import os

import pytest


def execute(notebook, cwd, *, env=None, timeout=300):
    """Run every cell of ``notebook`` (an nbformat notebook) in order, with ``cwd`` as the
    kernel's working directory and ``env`` (default: this process's) as its environment;
    fills in the cells' outputs and returns the notebook. A cell that raises fails the
    test with the cell and its traceback. Skips when nbclient or ipykernel is missing."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    client = nbclient.NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(env=dict(os.environ if env is None else env))
    return notebook


def text(cell):
    """The text a code cell printed or displayed, joined."""
    parts = []
    for output in cell.outputs:
        if "text" in output:
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)

"""The pytest plugin of mindserve: a ``mindserve_runtime`` fixture.

Installed with mindserve, pytest loads it by itself (entry point ``pytest11``, name
``mindserve``; ``-p no:mindserve`` turns it off). Without the entry point, load it with
``-p mindserve.testing.pytest_plugin``, or ``pytest_plugins = ["mindserve.testing.pytest_plugin"]``
in a top-level ``conftest.py``, or import the fixture there:
``from mindserve.testing.pytest_plugin import mindserve_runtime``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mindserve._errors import counted
from mindserve.testing._runtime import DeterministicRuntime
from mindserve.testing._threads import leaked_threads, mindserve_threads

__all__ = ["mindserve_runtime"]

#: Seconds the fixture's teardown gives calls to finish (``close(grace=...)``), and then the
#: runtime's threads to end, before it fails the test.
CLOSE_TIMEOUT = 10.0


@pytest.fixture
def mindserve_runtime() -> Iterator[DeterministicRuntime]:
    """A :class:`~mindserve.testing.DeterministicRuntime`, closed after the test.

    The test fails (in its teardown) if a thread the runtime started is still running
    :data:`CLOSE_TIMEOUT` seconds (10) after the close: a stage or model that never
    returns, say.
    """
    before = mindserve_threads()
    runtime = DeterministicRuntime()
    try:
        yield runtime
    finally:
        runtime.close(grace=CLOSE_TIMEOUT)
    left = leaked_threads(before, CLOSE_TIMEOUT)
    if left:
        pytest.fail(
            f"mindserve_runtime: {counted(len(left), 'thread')} of the runtime "
            f"{'still runs' if len(left) == 1 else 'still run'} after close(): "
            f"{[t.name for t in left]}. Hint: a stage or model of the test may never return, "
            f"or a call was left waiting on something the test never set.",
            pytrace=False,
        )

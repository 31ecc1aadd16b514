"""Fixtures of the unit layer (Python callables as models), and its one rule kept: no test here
imports MindSpore (checked when MindSpore was not imported before the test)."""

import sys

import pytest

from servables import calc_servable


@pytest.fixture(autouse=True)
def _imports_no_mindspore():
    before = "mindspore" in sys.modules
    yield
    if not before and "mindspore" in sys.modules:
        pytest.fail("a unit test imported MindSpore: move it to tests/integration", pytrace=False)


@pytest.fixture
def calc(rt):
    """A runtime serving ``calc_servable``; the shapes of the batches its model ran."""
    calls = []
    rt.start(calc_servable(calls))
    return rt, calls

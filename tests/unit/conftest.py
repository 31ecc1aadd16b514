"""Fixtures of the unit layer (Python callables as models)."""

import pytest

from servables import calc_servable


@pytest.fixture
def calc(rt):
    """A runtime serving ``calc_servable``; the shapes of the batches its model ran."""
    calls = []
    rt.start(calc_servable(calls))
    return rt, calls

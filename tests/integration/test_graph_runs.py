"""What a graph run leaves of the rest of the process as it was: Python's thread switch
interval is short only while the run lasts (so that the run wins the GIL back quickly from
busy Python threads), and the program's own setting comes back after it, whatever happens."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mindserve._execution import mindspore as _mindspore


class Recording:
    """Stands for a network: records the switch interval it runs under."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[float] = []
        self.fail = fail

    def __call__(self, tensor):
        self.seen.append(sys.getswitchinterval())
        if self.fail:
            raise RuntimeError("the graph failed")
        return tensor


@pytest.fixture
def interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_a_run_shortens_the_switch_interval_and_puts_it_back(interval):
    sys.setswitchinterval(0.005)
    network = Recording()
    (out,) = _mindspore.run_network(network, (np.ones((1, 3), np.float32),))
    assert out.tolist() == [[1.0, 1.0, 1.0]]
    assert network.seen == [pytest.approx(_mindspore.RUN_SWITCH_INTERVAL)]
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_failed_run_puts_the_interval_back_too(interval):
    sys.setswitchinterval(0.003)
    with pytest.raises(RuntimeError, match="the graph failed"):
        _mindspore.run_network(Recording(fail=True), (np.ones((1, 3), np.float32),))
    assert sys.getswitchinterval() == pytest.approx(0.003)


def test_a_shorter_interval_of_the_program_is_left_alone(interval):
    shorter = _mindspore.RUN_SWITCH_INTERVAL / 2
    sys.setswitchinterval(shorter)
    network = Recording()
    _mindspore.run_network(network, (np.ones((1, 3), np.float32),))
    assert network.seen == [pytest.approx(shorter)]
    assert sys.getswitchinterval() == pytest.approx(shorter)

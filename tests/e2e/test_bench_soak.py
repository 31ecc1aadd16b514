"""bench/soak.py keeps working: a short soak passes its targets, and its checker catches bad answers."""

import os
import subprocess
import sys

import numpy as np
import pytest

from paths import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))

import soak

pytestmark = pytest.mark.warm_up  # run as a user would: warm-up as the environment says


def test_a_short_soak_with_a_hot_update_meets_its_targets(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "soak.py"),
            "--seconds",
            "4",
            "--threads",
            "4",
            "--hot-updates",
            "1",
            "--warm-up",
            "1",
            "--sample-every",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "| wrong answers | 0 | 0 | yes |" in lines
    assert "| lost instances (no answer within 60 s) | 0 | 0 | yes |" in lines
    assert "| duplicated answers | 0 | 0 | yes |" in lines
    assert "| failed calls, by class | 0 | 0 | yes |" in lines
    assert any(line.startswith("| hot updates done / failed | 1 / 0") for line in lines)
    assert any(line.startswith("| RssAnon slope") for line in lines)
    assert lines[-1] == "targets met"
    assert not list(temp.iterdir()), "the soak leaves nothing in the temporary directory"


class Checked:
    """What Caller.check needs of a soak, without a runtime."""

    def __init__(self, last_version: int = 1) -> None:
        self.net = soak.Network()
        self.versions = soak.Versions(last_version)
        self.examples = []
        self.lost_after = 60.0

    def example(self, text):
        self.examples.append(text)

    def check(self, numbers, answers, start=1.0, end=2.0):
        caller = soak.Caller(0, 1, self)
        numbers = np.array(numbers)
        caller.check(numbers, self.net.inputs(numbers), answers, start, end)
        return caller


def answers(checked, numbers, version=1):
    """The right answers of ``version`` for the given instance numbers."""
    y = checked.net.expected(checked.net.inputs(np.array(numbers)))
    y[:, 2:] += version
    return [{"y": row.astype(np.float32)} for row in y]


def counts(caller):
    return caller.wrong, caller.lost, caller.duplicated


def test_the_checker_passes_right_answers_of_large_instance_numbers():
    checked = Checked()
    numbers = [0, 5, 2**30 + 7, 123_456_789]
    caller = checked.check(numbers, answers(checked, numbers))
    assert counts(caller) == (0, 0, 0) and caller.instances == 4 and not checked.examples


@pytest.mark.parametrize(
    "mangle, expected",
    [
        (lambda a: [a[0], {"y": a[1]["y"] + np.float32(0.01)}], (1, 0, 0)),  # values off
        (lambda a: [a[1], a[0]], (2, 0, 0)),  # answers swapped
        (lambda a: [a[0], a[0]], (0, 0, 1)),  # one answer twice
        (lambda a: a[:1], (0, 1, 0)),  # an answer missing
        (lambda a: a + a[:1], (0, 0, 1)),  # an extra answer
        (lambda a: [a[0], {"z": 1}], (2, 0, 0)),  # unreadable
        (lambda a: tuple(a), (2, 0, 0)),  # not a list
    ],
)
def test_the_checker_counts_bad_answers(mangle, expected):
    checked = Checked()
    caller = checked.check([10, 11], mangle(answers(checked, [10, 11])))
    assert counts(caller) == expected
    assert checked.examples


def test_the_checker_accepts_only_a_version_serving_during_the_call():
    checked = Checked(last_version=3)
    checked.versions.began[2], checked.versions.returned[2] = 5.0, 6.0
    checked.versions.began[3] = 9.0  # still updating
    assert counts(checked.check([1], answers(checked, [1], version=2), 5.5, 7.0)) == (0, 0, 0)
    assert counts(checked.check([1], answers(checked, [1], version=1), 5.5, 7.0)) == (0, 0, 0)
    assert counts(checked.check([1], answers(checked, [1], version=1), 6.5, 7.0)) == (1, 0, 0)  # retired
    assert counts(checked.check([1], answers(checked, [1], version=3), 6.5, 7.0)) == (1, 0, 0)  # not yet
    assert counts(checked.check([1], answers(checked, [1], version=3), 6.5, 9.5)) == (0, 0, 0)
    assert counts(checked.check([1], answers(checked, [1], version=4), 6.5, 9.5)) == (1, 0, 0)  # never


def test_percentile_and_slope_helpers():
    histogram = [0] * soak.BINS
    histogram[soak.latency_bin(0.001)] = 99
    histogram[soak.latency_bin(0.5)] = 1
    assert 0.001 <= soak.percentile(histogram, 0.5) <= 0.001 * soak.BIN_RATIO
    assert 0.001 <= soak.percentile(histogram, 0.99) <= 0.001 * soak.BIN_RATIO
    assert 0.5 <= soak.percentile(histogram, 1.0) <= 0.5 * soak.BIN_RATIO
    assert soak.slope_per([0, 100_000, 200_000], [10.0, 10.5, 11.0]) == pytest.approx(0.5)
    assert soak.rss_anon_mb() > 0

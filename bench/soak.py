"""Soak: many caller threads for minutes, every answer checked, memory watched.

    python bench/soak.py [--threads 64] [--minutes 10 | --seconds S] [--hot-updates N] [--workers N]

The script exports a small MLP (16-32-10, MindIR, dynamic batch) whose weights it knows, and
serves it. Each caller thread sends calls of 1 or 4 instances (three calls of one, then one
of four), every instance distinct: its first two inputs carry the instance's number (which
the network passes through exactly to its first two outputs) and the others are derived
from it. Every answer is checked against the network computed with numpy, and counted:

* lost: a call that did not return within ``--lost-after`` seconds (still running at the
  end, or returning later than that), or an instance missing from a call's answer;
* duplicated: more answers than instances, or one instance answered twice in a call;
* wrong: an answer carrying another instance's number, or values that differ from numpy's;
* errors: calls that raised, by exception class.

``--hot-updates N`` exports N more versions (version k adds k to the outputs 2-9) and runs
``Runtime.update`` N times, spread over the run; an answer must come from a version that
was serving at some point during its call. Memory: the process's anonymous resident memory
(RssAnon in /proc/self/status; with workers, theirs summed too) is sampled every second
after the warm-up, and its least-squares slope against instances answered is reported in
MB per 100,000 instances.

Targets (the exit status is 1 when one fails): 0 wrong, 0 lost, 0 duplicated, 0 failed
calls or updates, and a memory slope under 0.1 MB per 100,000 instances (judged only when
the samples span at least 100,000 instances).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _machine import describe  # noqa: E402

import mindserve  # noqa: E402

N_IN, N_HIDDEN, N_OUT = 16, 32, 10
ID_BASE = 4096  # an instance number n travels as (n // 4096, n % 4096): exact in float32
SLOPE_TARGET_MB = 0.1  # per 100,000 instances
PER_SLOPE = 100_000
# Latency histogram: bins 2% wide from 10 us up (the last bin holds everything slower).
BIN_LOW, BIN_RATIO, BINS = 1e-5, 1.02, 1000


def latency_bin(latency: float) -> int:
    return min(BINS - 1, max(0, int(math.log(max(latency, BIN_LOW) / BIN_LOW, BIN_RATIO))))


def percentile(histogram: list[int], q: float) -> float:
    """The upper edge, in seconds, of the histogram bin holding the ``q`` quantile."""
    rank, seen = q * sum(histogram), 0
    for i, count in enumerate(histogram):
        seen += count
        if seen >= rank and seen:
            return BIN_LOW * BIN_RATIO ** (i + 1)
    return float("nan")


def rss_anon_mb(pid: int | str = "self") -> float:
    """A process's anonymous resident memory (RssAnon), in MB; 0 if it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def slope_per(instances: list[float], mb: list[float]) -> float:
    """Least-squares slope of memory against instances answered, in MB per 100,000."""
    return float(np.polyfit(instances, mb, 1)[0]) * PER_SLOPE


class Network:
    """The MLP's weights, the inputs made from instance numbers, and the expected outputs."""

    def __init__(self) -> None:
        rng = np.random.default_rng(1234)
        self.w1 = np.zeros((N_IN, N_HIDDEN), np.float32)
        self.w1[0, 0] = self.w1[1, 1] = 1.0  # hidden units 0 and 1 copy the instance number
        self.w1[2:, 2:] = rng.normal(0, 0.5, (N_IN - 2, N_HIDDEN - 2))
        self.b1 = np.zeros(N_HIDDEN, np.float32)
        self.b1[2:] = rng.normal(0, 0.1, N_HIDDEN - 2)
        self.w2 = np.zeros((N_HIDDEN, N_OUT), np.float32)
        self.w2[0, 0] = self.w2[1, 1] = 1.0  # and so do outputs 0 and 1
        self.w2[2:, 2:] = rng.normal(0, 0.5, (N_HIDDEN - 2, N_OUT - 2))
        self.b2 = np.zeros(N_OUT, np.float32)
        self.b2[2:] = rng.normal(0, 0.1, N_OUT - 2)
        self.freq = rng.uniform(1e-3, 1e-1, N_IN - 2)
        self.phase = rng.uniform(0, 2 * math.pi, N_IN - 2)

    def inputs(self, numbers: np.ndarray) -> np.ndarray:
        """One distinct input row per instance number."""
        x = np.empty((len(numbers), N_IN), np.float32)
        x[:, 0] = numbers // ID_BASE
        x[:, 1] = numbers % ID_BASE
        x[:, 2:] = np.sin(np.outer(numbers, self.freq) + self.phase)
        return x

    def expected(self, x: np.ndarray) -> np.ndarray:
        """Version 0's outputs (version k adds k to outputs 2-9), in float64."""
        return np.maximum(x @ self.w1.astype(np.float64) + self.b1, 0) @ self.w2 + self.b2

    def export(self, root: str, versions: int) -> None:
        """Versions 1 to ``versions`` of the network under ``root``, as MindIR files."""
        import mindspore as ms
        from mindspore import Tensor, nn, ops

        class MLP(nn.Cell):
            def __init__(self, w1, b1, w2, b2) -> None:
                super().__init__()
                self.w1 = ms.Parameter(Tensor(w1), name="w1")
                self.b1 = ms.Parameter(Tensor(b1), name="b1")
                self.w2 = ms.Parameter(Tensor(w2), name="w2")
                self.b2 = ms.Parameter(Tensor(b2), name="b2")
                self.relu = nn.ReLU()

            def construct(self, x):
                return ops.matmul(self.relu(ops.matmul(x, self.w1) + self.b1), self.w2) + self.b2

        for version in range(1, versions + 1):
            b2 = self.b2.copy()
            b2[2:] += version
            os.makedirs(os.path.join(root, str(version)))
            ms.export(
                MLP(self.w1, self.b1, self.w2, b2),
                Tensor(shape=[None, N_IN], dtype=ms.float32),
                file_name=os.path.join(root, str(version), "mlp"),
                file_format="MINDIR",
            )


class Versions:
    """When each hot update began and returned, to tell which versions may answer a call."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.began: dict[int, float] = {1: 0.0}
        self.returned: dict[int, float] = {}

    def may_answer(self, version: int, start: float, end: float) -> bool:
        """Whether ``version`` served at some point between a call's start and end: the update
        to it had begun by the end, and the update to the next had not returned at the start."""
        began = self.began.get(version)
        if began is None or began > end:
            return False
        retired = self.returned.get(version + 1)
        return retired is None or retired >= start


class Caller(threading.Thread):
    """One caller thread: distinct instances, every answer checked, counts kept."""

    def __init__(self, index: int, count: int, soak: Soak) -> None:
        super().__init__(name=f"soak-caller-{index}", daemon=True)  # a lost call must not block exit
        self.index, self.count, self.soak = index, count, soak
        self.calls = self.instances = self.wrong = self.duplicated = self.lost = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.histogram = [0] * BINS
        self.slowest = 0.0
        self.in_flight: tuple[float, int] | None = None  # (start, instances) of the running call

    def run(self) -> None:
        soak, sent = self.soak, 0
        while not soak.stop.is_set():
            size = 4 if self.calls % 4 == 3 else 1
            numbers = (sent + np.arange(size)) * self.count + self.index
            sent += size
            x = soak.net.inputs(numbers)
            start = time.monotonic()
            self.in_flight = (start, size)
            try:
                results = soak.rt.infer("soak", "predict", [{"x": row} for row in x])
            except Exception as exc:  # counted by class; a failed call is a failed target
                self.errors[type(exc).__name__] += 1
                soak.example(f"{type(exc).__name__}: {exc}")
                results = None
            end = time.monotonic()
            if not soak.counting:
                return
            self.in_flight = None
            self.calls += 1
            latency = end - start
            self.slowest = max(self.slowest, latency)
            self.histogram[latency_bin(latency)] += 1
            if latency > soak.lost_after:
                self.lost += size
                soak.example(f"a call of instances {numbers.tolist()} took {latency:.1f} s")
            if results is not None:
                self.check(numbers, x, results, start, end)

    def check(self, numbers: np.ndarray, x: np.ndarray, results, start: float, end: float) -> None:
        soak, size = self.soak, len(numbers)
        if not isinstance(results, list):
            self.wrong += size
            soak.example(f"instances {numbers.tolist()}: the answer is a {type(results).__name__}")
            return
        if len(results) != size:
            self.lost += max(0, size - len(results))
            self.duplicated += max(0, len(results) - size)
            soak.example(f"instances {numbers.tolist()}: {len(results)} answers")
        try:
            got = np.array([r["y"] for r in results[:size]], np.float64).reshape(-1, N_OUT)
        except Exception as exc:
            self.wrong += size
            soak.example(f"instances {numbers.tolist()}: unreadable answer ({exc!r})")
            return
        answered = np.rint(got[:, 0]) * ID_BASE + np.rint(got[:, 1])
        offsets = got[:, 2:] - soak.net.expected(x[: len(got)])[:, 2:]
        versions = np.rint(offsets.mean(axis=1))
        for i, version in enumerate(versions):
            if answered[i] != numbers[i]:
                if answered[i] in numbers and np.count_nonzero(answered == answered[i]) > 1:
                    self.duplicated += 1  # another instance of this call, answered twice
                else:
                    self.wrong += 1
                soak.example(f"instance {numbers[i]} got the answer of instance {answered[i]:.0f}")
            elif np.abs(offsets[i] - version).max() > 1e-3 or not soak.versions.may_answer(
                int(version), start, end
            ):
                self.wrong += 1
                soak.example(
                    f"instance {numbers[i]}: outputs {got[i].tolist()}, expected version k's "
                    f"{(soak.net.expected(x[i : i + 1])[0]).tolist()} + k on outputs 2-9"
                )
        self.instances += len(got)


class Soak:
    def __init__(self, args: argparse.Namespace, seconds: float, root: str) -> None:
        self.args, self.seconds = args, seconds
        self.lost_after = args.lost_after
        self.warm_up = min(60.0, seconds / 5) if args.warm_up is None else args.warm_up
        self.net = Network()
        self.net.export(root, args.hot_updates + 1)
        self.versions = Versions(args.hot_updates + 1)
        self.stop = threading.Event()
        self.counting = True
        self.examples: list[str] = []
        self.examples_lock = threading.Lock()
        self.samples: list[tuple[float, float, float]] = []  # (instances, main MB, workers MB)
        self.updates: list[float] = []  # seconds each update took
        self.update_errors: collections.Counter[str] = collections.Counter()
        svc = mindserve.Servable("soak", directory=root)
        mlp = svc.model("mlp.mindir")
        svc.add_method(lambda x: mlp(x), name="predict", outputs="y")
        self.svc = svc
        self.callers = [Caller(i, args.threads, self) for i in range(args.threads)]

    def example(self, text: str) -> None:
        """Keep the first few failures, to print as a repro."""
        with self.examples_lock:
            if len(self.examples) < 10:
                self.examples.append(text)

    def answered(self) -> int:
        return sum(c.instances for c in self.callers)

    def workers_mb(self) -> float:
        if not self.args.workers:
            return 0.0
        import psutil

        return sum(rss_anon_mb(p.pid) for p in psutil.Process().children(recursive=True))

    def sample_memory(self, began: float) -> None:
        if self.stop.wait(self.warm_up):
            return
        while True:
            self.samples.append((self.answered(), rss_anon_mb(), self.workers_mb()))
            if self.stop.wait(self.args.sample_every):
                return

    def hot_update(self, began: float) -> None:
        count = self.args.hot_updates
        for i in range(1, count + 1):
            if self.stop.wait(max(0.0, began + self.seconds * i / (count + 1) - time.monotonic())):
                return
            version = i + 1
            self.versions.began[version] = time.monotonic()
            try:
                self.rt.update("soak", version=version)
            except Exception as exc:
                self.update_errors[type(exc).__name__] += 1
                self.example(f"update to version {version}: {type(exc).__name__}: {exc}")
                continue
            self.versions.returned[version] = time.monotonic()
            self.updates.append(self.versions.returned[version] - self.versions.began[version])

    def run(self) -> dict:
        with mindserve.Runtime() as rt:
            self.rt = rt
            rt.start(self.svc, version=1, workers=self.args.workers)
            began = time.monotonic()
            helpers = [
                threading.Thread(target=self.sample_memory, args=(began,), daemon=True),
                threading.Thread(target=self.hot_update, args=(began,), daemon=True),
            ]
            for t in helpers + self.callers:
                t.start()
            while not self.stop.wait(max(0.0, min(60.0, began + self.seconds - time.monotonic()))):
                elapsed = time.monotonic() - began
                print(
                    f"{elapsed:5.0f} s: {self.answered():,} instances, {len(self.updates)} updates, "
                    f"RssAnon {rss_anon_mb():.1f} MB",
                    file=sys.stderr,
                )
                if elapsed >= self.seconds:
                    self.stop.set()
            ended = time.monotonic()
            for c in self.callers:  # a call still running lost_after seconds after the end is lost
                c.join(max(0.0, ended + self.lost_after - time.monotonic()))
            stuck = [c for c in self.callers if c.is_alive() and c.in_flight is not None]
            for c in stuck:
                start, size = c.in_flight
                c.lost += size
                self.example(
                    f"{c.name}: a call of {size} instances still running after {time.monotonic() - start:.0f} s"
                )
            self.counting = False  # a stuck call that close() ends is counted once, as lost
            for t in helpers:
                t.join()
            if stuck:
                rt.close(grace=5)
        return {"seconds": ended - began, "stuck": len(stuck)}


def report(soak: Soak, seconds: float) -> bool:
    """Print the figures as a markdown table; return whether every target is met."""
    callers = soak.callers
    histogram = [sum(c.histogram[i] for c in callers) for i in range(BINS)]
    errors = sum((c.errors for c in callers), collections.Counter())
    instances = soak.answered()
    lost = sum(c.lost for c in callers)
    duplicated = sum(c.duplicated for c in callers)
    wrong = sum(c.wrong for c in callers)
    calls = sum(c.calls for c in callers)
    failed = sum(errors.values())
    rows: list[tuple[str, str, str, bool | None]] = []
    mode = f"workers={soak.args.workers}" if soak.args.workers else "in-process"
    rows.append(("caller threads, duration, serving", f"{len(callers)}, {seconds:.0f} s, {mode}", "", None))
    rows.append(("calls / instances answered", f"{calls:,} / {instances:,}", "", None))
    rows.append(("throughput (instances/s)", f"{instances / seconds:,.0f}", "", None))
    rows.append(
        (
            "latency p50 / p99 / max (ms)",
            f"{percentile(histogram, 0.5) * 1e3:.2f} / {percentile(histogram, 0.99) * 1e3:.2f} / "
            f"{max(c.slowest for c in callers) * 1e3:.1f}",
            "",
            None,
        )
    )
    rows.append(("wrong answers", str(wrong), "0", wrong == 0))
    rows.append((f"lost instances (no answer within {soak.lost_after:g} s)", str(lost), "0", lost == 0))
    rows.append(("duplicated answers", str(duplicated), "0", duplicated == 0))
    by_class = ", ".join(f"{name} {n}" for name, n in errors.most_common()) or "none"
    rows.append(("failed calls, by class", f"{failed} ({by_class})" if failed else "0", "0", failed == 0))
    if soak.args.hot_updates:
        updates = sorted(soak.updates)
        failed_updates = sum(soak.update_errors.values())
        median = f", median {updates[len(updates) // 2]:.2f} s each" if updates else ""
        rows.append(
            (
                "hot updates done / failed",
                f"{len(updates)} / {failed_updates}{median}",
                f"{soak.args.hot_updates} / 0",
                len(updates) == soak.args.hot_updates and failed_updates == 0,
            )
        )
    samples = soak.samples
    span = samples[-1][0] - samples[0][0] if len(samples) >= 2 else 0
    if span > 0:
        xs = [s[0] for s in samples]
        judged = span >= PER_SLOPE
        slope = slope_per(xs, [s[1] for s in samples])
        rows.append(
            (
                f"RssAnon slope, MB per 100,000 instances ({len(samples)} samples over {span:,.0f} "
                f"instances after {soak.warm_up:g} s of warm-up)",
                f"{slope:+.4f}",
                f"< {SLOPE_TARGET_MB}",
                (slope < SLOPE_TARGET_MB) if judged else None,
            )
        )
        rows.append(
            ("RssAnon first / last sample (MB)", f"{samples[0][1]:.1f} / {samples[-1][1]:.1f}", "", None)
        )
        if soak.args.workers:
            wslope = slope_per(xs, [s[2] for s in samples])
            rows.append(
                (
                    "workers' RssAnon slope, MB per 100,000 instances",
                    f"{wslope:+.4f}",
                    f"< {SLOPE_TARGET_MB}",
                    (wslope < SLOPE_TARGET_MB) if judged else None,
                )
            )
            rows.append(
                (
                    "workers' RssAnon first / last sample (MB)",
                    f"{samples[0][2]:.1f} / {samples[-1][2]:.1f}",
                    "",
                    None,
                )
            )
    else:
        rows.append(("RssAnon slope", "not measured (run too short for samples after the warm-up)", "", None))
    print("\n| figure | value | target | met? |")
    print("| --- | ---: | ---: | --- |")
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {'' if met is None else 'yes' if met else 'NO'} |")
    if soak.examples:
        print("\nfirst failures:")
        for text in soak.examples:
            print(f"  {text}")
    ok = all(met is not False for *_, met in rows)
    print(f"\ntargets {'met' if ok else 'FAILED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=64, help="caller threads (default 64)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    length.add_argument("--seconds", type=float, help="duration in seconds, instead of --minutes")
    parser.add_argument("--hot-updates", type=int, default=0, help="hot updates spread over the run")
    parser.add_argument("--workers", type=int, default=None, help="serve from N worker processes")
    parser.add_argument("--lost-after", type=float, default=60.0, help="seconds after which a call is lost")
    parser.add_argument(
        "--warm-up",
        type=float,
        default=None,
        help="seconds before memory sampling (default: a fifth, at most 60)",
    )
    parser.add_argument("--sample-every", type=float, default=1.0, help="seconds between memory samples")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    if args.threads < 1 or seconds <= 0 or args.hot_updates < 0:
        parser.error("--threads, the duration and --hot-updates must be positive")
    print(describe())
    with tempfile.TemporaryDirectory(prefix="mindserve-soak-") as root:
        soak = Soak(args, seconds, os.path.join(root, "soak"))
        import mindspore

        print(
            f"MindSpore {mindspore.__version__}; MLP {N_IN}-{N_HIDDEN}-{N_OUT}; {args.threads} caller threads "
            f"for {seconds:g} s, {args.hot_updates} hot updates"
        )
        outcome = soak.run()
    sys.exit(0 if report(soak, outcome["seconds"]) else 1)


if __name__ == "__main__":
    main()

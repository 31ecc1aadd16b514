"""Side-by-side throughput and latency of mindserve's batching, on one MLP, in one run.

    python bench/bench_batching.py [--rounds 3] [--seconds 2] [--only SUBSTRING ...]

Model: MLP 256-1024-1024-10 exported to MindIR with a dynamic batch dimension, on the CPU.
Every configuration runs for ``--seconds``: each caller (thread, asyncio task, or pending
future) keeps calling until the deadline, and throughput is the instances completed over the
time until the last call returned. Configurations run ``--rounds`` times, interleaved; the
table shows medians across rounds. Ratios compare with the raw batch-64 limit (the network
called on one 64-row array under ``mindserve.mindspore_lock()``) and the simple batcher
(bench/simple_batcher.py), measured in the same run (the machine is shared and noisy: compare
ratios, not absolute figures). Each concurrent mindserve row is compared with the simple
batcher at the same concurrency (16, 64 or 256 threads, or 1,000 pending futures); the other
rows with the simple batcher's 64 threads. ``--only`` runs the rows whose name contains one
of the given substrings.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _machine import describe  # noqa: E402
from simple_batcher import SimpleBatcher  # noqa: E402

import mindserve  # noqa: E402

CALLERS = 64  # threads or asyncio tasks of the main concurrent rows
FUTURES = 1000  # futures submitted at once


def export_mlp(directory: str) -> str:
    import mindspore as ms
    from mindspore import nn

    class MLP(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.SequentialCell(
                nn.Dense(256, 1024), nn.ReLU(), nn.Dense(1024, 1024), nn.ReLU(), nn.Dense(1024, 10)
            )

        def construct(self, x):
            return self.body(x)

    ms.set_seed(0)
    os.makedirs(os.path.join(directory, "1"), exist_ok=True)
    ms.export(
        MLP(),
        ms.Tensor(shape=[None, 256], dtype=ms.float32),
        file_name=os.path.join(directory, "1", "mlp"),
        file_format="MINDIR",
    )
    return os.path.join(directory, "1", "mlp.mindir")


class Result:
    def __init__(self, instances: int, seconds: float, latencies: list[float], mean_batch: float) -> None:
        self.throughput = instances / seconds
        ordered = sorted(latencies) or [float("nan")]
        self.p50 = ordered[len(ordered) // 2] * 1e3
        self.p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3
        self.mean_batch = mean_batch


# Each measurement runs for a fixed duration and returns (instances, seconds, per-call
# latencies). Every caller keeps calling until the deadline; the run ends when the last
# caller's last call returns, and throughput is completed instances over that time. (Giving
# each caller a fixed number of calls instead lets one slow caller stretch the run.)


def sequential(call, seconds: float, instances_per_call: int = 1) -> tuple[int, float, list[float]]:
    latencies = []
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        t = time.perf_counter()
        if t >= deadline:
            break
        call()
        latencies.append(time.perf_counter() - t)
    return len(latencies) * instances_per_call, time.perf_counter() - start, latencies


def in_threads(call, threads: int, seconds: float) -> tuple[int, float, list[float]]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(k: int) -> None:
        mine = latencies[k]
        barrier.wait()
        end = deadline[0]
        while True:
            t = time.perf_counter()
            if t >= end:
                return
            call()
            mine.append(time.perf_counter() - t)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    barrier.wait()
    for w in workers:
        w.join()
    done = [x for lat in latencies for x in lat]
    return len(done), time.perf_counter() - start, done


def in_tasks(call, tasks: int, seconds: float) -> tuple[int, float, list[float]]:
    """``tasks`` asyncio tasks awaiting ``call()`` until the deadline."""

    async def main() -> tuple[int, float, list[float]]:
        latencies: list[float] = []
        start = time.perf_counter()
        deadline = start + seconds

        async def task() -> None:
            while True:
                t = time.perf_counter()
                if t >= deadline:
                    return
                await call()
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(task() for _ in range(tasks)))
        return len(latencies), time.perf_counter() - start, latencies

    return asyncio.run(main())


def futures_in_flight(submit, count: int, seconds: float) -> tuple[int, float, list[float]]:
    """Keep ``count`` futures of ``submit()`` pending until the deadline: each completion
    submits the next (from the thread that completed it). Latency runs from a future's
    submission to its completion."""
    latencies: list[float] = []
    lock = threading.Lock()
    finished = threading.Event()
    outstanding = [0]
    start = time.perf_counter()
    deadline = start + seconds

    def launch() -> None:
        t = time.perf_counter()
        submit().add_done_callback(lambda future, t=t: done(future, t))

    def done(future, t: float) -> None:
        now = time.perf_counter()
        future.result()
        with lock:
            latencies.append(now - t)
            again = now < deadline
            if not again:
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    finished.set()
        if again:
            launch()

    outstanding[0] = count
    for _ in range(count):
        launch()
    finished.wait()
    return len(latencies), time.perf_counter() - start, latencies


class Bench:
    def __init__(self, path: str, seconds: float) -> None:
        import mindspore as ms
        from mindspore import nn

        self.ms = ms
        self.seconds = seconds
        self.net = nn.GraphCell(ms.load(path))
        self.x1 = np.random.default_rng(0).normal(size=(1, 256)).astype(np.float32)
        self.x64 = np.random.default_rng(1).normal(size=(64, 256)).astype(np.float32)
        for batch in (1, 64):  # compile both shapes before timing
            self.raw(self.x1 if batch == 1 else self.x64)
        self.rt = mindserve.Runtime()
        self.buckets = self.rt.start(self.servable(path)).models[0].batching.buckets
        # The same model in a runtime gathering no metrics (metrics' cost).
        self.bare = mindserve.Runtime(metrics=False)
        self.bare.start(self.servable(path))
        self.instance = {"x": self.x1[0]}
        self.rows4096 = np.random.default_rng(2).normal(size=(4096, 256)).astype(np.float32)

    @staticmethod
    def servable(path: str) -> mindserve.Servable:
        svc = mindserve.Servable("mlp", directory=os.path.dirname(os.path.dirname(path)))
        mlp = svc.model("mlp.mindir")
        svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
        return svc

    def raw(self, x: np.ndarray) -> np.ndarray:
        # MindSpore's process lock, as mindserve and any careful user takes it: a graph must
        # never run beside another MindSpore call.
        with mindserve.mindspore_lock():
            return self.net(self.ms.Tensor(x)).asnumpy()

    def infer_one(self):
        return self.rt.infer("mlp", "predict", [self.instance])

    def model_counts(self, rt: mindserve.Runtime | None = None) -> tuple[int, int]:
        (model,) = (rt or self.rt).status()[0].models
        return model.batches, model.instances

    def mindserve_run(self, measure, rt: mindserve.Runtime | None = None) -> Result:
        """Run ``measure()``; the mean batch comes from the model's counters."""
        batches0, instances0 = self.model_counts(rt)
        calls, seconds, latencies = measure()
        batches1, instances1 = self.model_counts(rt)
        mean = (instances1 - instances0) / max(1, batches1 - batches0)
        return Result(calls, seconds, latencies, mean)

    def simple_run(self, measure) -> Result:
        """Run ``measure(batcher)`` on a new simple batcher over the raw model."""
        batcher = SimpleBatcher(self.raw)
        try:
            calls, seconds, latencies = measure(batcher)
        finally:
            batcher.close()
        return Result(calls, seconds, latencies, batcher.instances / max(1, batcher.batches))

    # -- the configurations ----------------------------------------------------------

    def raw_batch1(self) -> Result:
        return self._paired[0]

    def raw_batch64(self) -> Result:
        calls, seconds, lat = sequential(lambda: self.raw(self.x64), self.seconds, 64)
        return Result(calls, seconds, lat, 64)

    def raw_rows64(self) -> Result:
        """The network over the 4,096 rows of the bulk call, 64 at a time (slices, no copy):
        what feeding it different data costs, against the limit's one array, which stays in
        the CPU's caches."""
        rows = self.rows4096
        batches = [rows[start : start + 64] for start in range(0, len(rows), 64)]
        turn = iter(range(1 << 62))

        def one() -> np.ndarray:
            return self.raw(batches[next(turn) % len(batches)])

        calls, seconds, lat = sequential(one, self.seconds, 64)
        return Result(calls, seconds, lat, 64)

    def lone_caller(self) -> Result:
        return self._paired[1]

    def pair_batch1(self) -> None:
        """Raw batch-1 calls and lone mindserve calls, interleaved in blocks of 100, so both
        see the same noise. (Alternating call by call, each network would find the other's
        weights in the CPU's caches: both slower, and by how much depends on the order.)"""
        raw, served = [], []
        batches0, _ = self.model_counts()
        deadline = time.perf_counter() + self.seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                t = time.perf_counter()
                self.raw(self.x1)
                raw.append(time.perf_counter() - t)
            for _ in range(100):
                t = time.perf_counter()
                self.infer_one()
                served.append(time.perf_counter() - t)
        batches1, _ = self.model_counts()
        self._paired = (
            Result(len(raw), sum(raw), raw, 1),
            Result(len(served), sum(served), served, len(served) / max(1, batches1 - batches0)),
        )

    def simple_threads(self, threads: int) -> Result:
        return self.simple_run(
            lambda b: in_threads(lambda: b.submit(self.x1[0]).result(), threads, self.seconds)
        )

    def mindserve_threads(self, threads: int) -> Result:
        return self.mindserve_run(lambda: in_threads(self.infer_one, threads, self.seconds))

    def bare_threads(self) -> Result:
        instance = [self.instance]
        return self.mindserve_run(
            lambda: in_threads(lambda: self.bare.infer("mlp", "predict", instance), CALLERS, self.seconds),
            self.bare,
        )

    def simple_futures(self) -> Result:
        return self.simple_run(
            lambda b: futures_in_flight(lambda: b.submit(self.x1[0]), FUTURES, self.seconds)
        )

    def mindserve_futures(self) -> Result:
        instance = [self.instance]
        return self.mindserve_run(
            lambda: futures_in_flight(
                lambda: self.rt.infer_async("mlp", "predict", instance), FUTURES, self.seconds
            )
        )

    def asyncio64(self) -> Result:
        instance = [self.instance]
        return self.mindserve_run(
            lambda: in_tasks(lambda: self.rt.ainfer("mlp", "predict", instance), CALLERS, self.seconds)
        )

    def bulk4096(self) -> Result:
        # The rows of one array, as a user holding a batch of inputs would pass them.
        instances = [{"x": row} for row in self.rows4096]
        return self.mindserve_run(
            lambda: sequential(lambda: self.rt.infer("mlp", "predict", instances), self.seconds, 4096)
        )


class Config:
    """One row: ``run(bench)`` measures it; ``baseline`` names the row it is compared with."""

    def __init__(self, name: str, label: str, run, baseline: str = "simple64") -> None:
        self.name, self.label, self.run, self.baseline = name, label, run, baseline


def concurrency_pair(name: str, simple_label: str, mindserve_label: str, simple, served) -> list[Config]:
    """A mindserve row and the simple batcher's row at the same concurrency, its baseline."""
    return [
        Config(f"simple{name}", simple_label, simple, baseline=f"simple{name}"),
        Config(f"mindserve{name}", mindserve_label, served, baseline=f"simple{name}"),
    ]


def threads_pair(threads: int, baseline_note: str = "") -> list[Config]:
    return concurrency_pair(
        str(threads),
        f"simple queue batcher, {threads} threads{baseline_note}",
        f"mindserve, {threads} caller threads",
        functools.partial(Bench.simple_threads, threads=threads),
        functools.partial(Bench.mindserve_threads, threads=threads),
    )


simple64, threads64 = threads_pair(CALLERS, " (baseline)")
CONFIGS = [
    Config(
        "raw_batch1", "raw MindSpore, batch 1, sequential (interleaved with the next row)", Bench.raw_batch1
    ),
    Config("raw_batch64", "raw MindSpore, batch 64, sequential (the limit)", Bench.raw_batch64),
    simple64,
    Config("lone_caller", "mindserve, 1 caller (interleaved with raw batch 1)", Bench.lone_caller),
    threads64,
    Config("asyncio64", f"mindserve, {CALLERS} asyncio tasks", Bench.asyncio64),
    Config("raw_rows64", "raw MindSpore, batch 64 over the 4096 rows below", Bench.raw_rows64),
    Config("bulk4096", "mindserve, one call of 4096 instances", Bench.bulk4096),
    Config("bare64", f"mindserve, {CALLERS} caller threads, Runtime(metrics=False)", Bench.bare_threads),
    *threads_pair(16),
    *threads_pair(256),
    *concurrency_pair(
        "futures",
        f"simple queue batcher, {FUTURES:,} pending futures",
        f"mindserve, {FUTURES:,} pending infer_async futures",
        Bench.simple_futures,
        Bench.mindserve_futures,
    ),
]
PAIRED = {"raw_batch1", "lone_caller"}  # measured together by Bench.pair_batch1


def select(only: list[str] | None) -> list[Config]:
    if not only:
        return CONFIGS
    wanted = [s.lower() for s in only]
    chosen = [c for c in CONFIGS if any(w in c.label.lower() or w in c.name.lower() for w in wanted)]
    if not chosen:
        names = "\n  ".join(f"{c.name}: {c.label}" for c in CONFIGS)
        sys.exit(f"--only {only} matches no row; the rows are:\n  {names}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each configuration runs")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval (seconds) for the whole run",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="SUBSTRING",
        help="run only the rows whose name or label contains SUBSTRING (case-insensitive; repeatable), "
        "e.g. --only 256 --only futures",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once the runtimes have started (the recipe in docs/running.md)",
    )
    args = parser.parse_args()
    configs = select(args.only)
    print(describe())
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    with tempfile.TemporaryDirectory() as root:
        bench = Bench(export_mlp(os.path.join(root, "mlp")), args.seconds)
        print(f"buckets after warm-up: {bench.buckets}")
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
            print(f"gc.freeze(): {gc.get_freeze_count():,} objects frozen")
        runs: dict[str, list[Result]] = {c.name: [] for c in configs}
        for round_ in range(args.rounds):
            if PAIRED & runs.keys():
                bench.pair_batch1()
            for config in configs:
                runs[config.name].append(config.run(bench))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        bench.rt.close()
        bench.bare.close()
    report(configs, runs, args.rounds)


def report(configs: list[Config], runs: dict[str, list[Result]], rounds: int) -> None:
    def med(name: str, field: str) -> float | None:
        if name not in runs:
            return None
        return statistics.median(getattr(r, field) for r in runs[name])

    def ratio(name: str, base: str, field: str = "throughput") -> float | None:
        """The median across rounds of the ratio within each round."""
        if name not in runs or base not in runs:
            return None
        return statistics.median(
            getattr(r, field) / getattr(b, field) for r, b in zip(runs[name], runs[base])
        )

    def x(value: float | None, fmt: str = ".2f") -> str:
        return "–" if value is None else f"{value:{fmt}}x"

    print(
        f"\nmedians of {rounds} rounds; MLP 256-1024-1024-10, CPU, {os.cpu_count()} cores, "
        f"switch interval {sys.getswitchinterval() * 1e3:g} ms\n"
        "vs baseline: against the simple batcher at the same concurrency (64 threads for rows "
        "without a counterpart)\n"
    )
    limit = med("raw_batch64", "throughput")
    print("| configuration | instances/s | p50 ms | p99 ms | mean batch | vs limit | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in configs:
        tput = med(c.name, "throughput")
        baseline = med(c.baseline, "throughput")
        print(
            f"| {c.label} | {tput:,.0f} | {med(c.name, 'p50'):.3f} | {med(c.name, 'p99'):.3f} | "
            f"{med(c.name, 'mean_batch'):.1f} | {x(limit and tput / limit)} | {x(baseline and tput / baseline)} |"
        )

    targets = [  # the serving-path issue's targets
        ("lone caller p50 / raw batch-1 p50", ratio("lone_caller", "raw_batch1", "p50"), "<= 1.10x"),
        ("64 threads / simple batcher throughput", ratio("mindserve64", "simple64"), ">= 1.2x"),
        ("64 threads p99 / simple batcher p99", ratio("mindserve64", "simple64", "p99"), "<= 1.0x"),
        (
            "64 asyncio tasks / simple batcher (64 threads) throughput",
            ratio("asyncio64", "simple64"),
            ">= 1.3x",
        ),
        (
            "1,000 futures / simple batcher (1,000 futures) throughput",
            ratio("mindservefutures", "simplefutures"),
            ">= 1.0x",
        ),
        ("one 4096-instance call / limit", ratio("bulk4096", "raw_batch64"), ">= 0.95x"),
        ("one 4096-instance call / raw over the same rows", ratio("bulk4096", "raw_rows64"), "–"),
        ("64 threads, metrics on / off throughput", ratio("mindserve64", "bare64"), ">= 0.97x"),
    ]
    lines = [
        f"- {what}: {x(value)} (target {target})" for what, value, target in targets if value is not None
    ]
    if lines:
        print("\ntargets (ratios within each round, median across rounds):")
        print("\n".join(lines))

    pairs = [c for c in configs if c.name.startswith("mindserve") and c.baseline in runs]
    if pairs:
        print(
            "\nmindserve / simple batcher at the same concurrency (within each round, median across rounds):"
        )
        for c in pairs:
            print(
                f"- {c.label}: throughput {x(ratio(c.name, c.baseline))}, "
                f"p50 {x(ratio(c.name, c.baseline, 'p50'))}, p99 {x(ratio(c.name, c.baseline, 'p99'))}"
            )


if __name__ == "__main__":
    main()

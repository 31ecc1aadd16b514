"""Side-by-side throughput and latency of mindserve's batching, on one MLP, in one run.

    python bench/bench_batching.py [--rounds 3] [--requests 3000] [--only SUBSTRING ...]

Model: MLP 256-1024-1024-10 exported to MindIR with a dynamic batch dimension, on the CPU.
Each configuration runs ``--rounds`` times, interleaved; the table shows medians across
rounds. Ratios compare with the raw batch-64 limit and the simple batcher, measured in the
same run (the machine is shared and noisy: compare ratios, not absolute figures). Each
concurrent mindserve row is compared with the simple batcher at the same concurrency (16, 64
or 256 threads, or 1,000 futures at once); the other rows with the simple batcher's 64
threads. ``--only`` runs the rows whose name contains one of the given substrings.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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
        ordered = sorted(latencies)
        self.p50 = ordered[len(ordered) // 2] * 1e3
        self.p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3
        self.mean_batch = mean_batch


# Each measurement returns (calls, seconds, per-call latencies).


def timed_calls(call, count: int) -> tuple[int, float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t)
    return count, time.perf_counter() - start, latencies


def in_threads(call, threads: int, per_thread: int) -> tuple[int, float, list[float]]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            t = time.perf_counter()
            call()
            latencies[k].append(time.perf_counter() - t)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return threads * per_thread, time.perf_counter() - start, [x for lat in latencies for x in lat]


def futures_at_once(submit, count: int, repeats: int) -> tuple[int, float, list[float]]:
    """``repeats`` times: ``count`` calls of ``submit()`` (each returning a Future), then wait
    for all of them. Latency runs from a future's submission to its completion."""
    latencies: list[float] = []
    completed = threading.Semaphore(0)

    def done(t: float) -> None:
        latencies.append(time.perf_counter() - t)
        completed.release()

    start = time.perf_counter()
    for _ in range(repeats):
        futures = []
        for _ in range(count):
            t = time.perf_counter()
            futures.append(submit())
            futures[-1].add_done_callback(lambda _, t=t: done(t))
        for future in futures:
            future.result()
        for _ in range(count):  # result() can return before the future's callbacks have run
            completed.acquire()
    return count * repeats, time.perf_counter() - start, latencies


class Bench:
    def __init__(self, path: str, requests: int) -> None:
        import mindspore as ms
        from mindspore import nn

        self.ms = ms
        self.requests = requests
        self.net = nn.GraphCell(ms.load(path))
        self.x1 = np.random.default_rng(0).normal(size=(1, 256)).astype(np.float32)
        self.x64 = np.random.default_rng(1).normal(size=(64, 256)).astype(np.float32)
        for batch in (1, 64):  # compile both shapes before timing
            self.raw(self.x1 if batch == 1 else self.x64)
        svc = mindserve.Servable("mlp", directory=os.path.dirname(os.path.dirname(path)))
        mlp = svc.model("mlp.mindir")
        svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
        self.rt = mindserve.Runtime()
        info = self.rt.start(svc)
        self.buckets = info.models[0].batching.buckets
        self.instance = {"x": self.x1[0]}

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.net(self.ms.Tensor(x)).asnumpy()

    def infer_one(self):
        return self.rt.infer("mlp", "predict", [self.instance])

    def per_thread(self, threads: int) -> int:
        return max(1, self.requests // threads * 4)

    def model_counts(self) -> tuple[int, int]:
        (model,) = self.rt.status()[0].models
        return model.batches, model.instances

    def mindserve_run(self, measure) -> Result:
        """Run ``measure()``; the mean batch comes from the model's counters."""
        batches0, instances0 = self.model_counts()
        calls, seconds, latencies = measure()
        batches1, instances1 = self.model_counts()
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
        calls, seconds, lat = timed_calls(lambda: self.raw(self.x64), max(1, self.requests // 16))
        return Result(calls * 64, seconds, lat, 64)

    def lone_caller(self) -> Result:
        return self._paired[1]

    def pair_batch1(self) -> None:
        """Raw batch-1 calls and lone mindserve calls, interleaved, so both see the same noise."""
        raw, served = [], []
        batches0, _ = self.model_counts()
        for _ in range(self.requests):
            t = time.perf_counter()
            self.raw(self.x1)
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            self.infer_one()
            served.append(time.perf_counter() - t)
        batches1, _ = self.model_counts()
        self._paired = (
            Result(self.requests, sum(raw), raw, 1),
            Result(self.requests, sum(served), served, self.requests / max(1, batches1 - batches0)),
        )

    def simple_threads(self, threads: int) -> Result:
        return self.simple_run(
            lambda b: in_threads(lambda: b.submit(self.x1[0]).result(), threads, self.per_thread(threads))
        )

    def mindserve_threads(self, threads: int) -> Result:
        return self.mindserve_run(lambda: in_threads(self.infer_one, threads, self.per_thread(threads)))

    def futures_repeats(self) -> int:
        return -(-self.requests // FUTURES)

    def simple_futures(self) -> Result:
        return self.simple_run(
            lambda b: futures_at_once(lambda: b.submit(self.x1[0]), FUTURES, self.futures_repeats())
        )

    def mindserve_futures(self) -> Result:
        return self.mindserve_run(
            lambda: futures_at_once(
                lambda: self.rt.infer_async("mlp", "predict", [self.instance]),
                FUTURES,
                self.futures_repeats(),
            )
        )

    def asyncio64(self) -> Result:
        per_task = self.per_thread(CALLERS)

        async def task(latencies):
            for _ in range(per_task):
                t = time.perf_counter()
                await self.rt.ainfer("mlp", "predict", [self.instance])
                latencies.append(time.perf_counter() - t)

        async def main():
            latencies: list[float] = []
            start = time.perf_counter()
            await asyncio.gather(*(task(latencies) for _ in range(CALLERS)))
            return CALLERS * per_task, time.perf_counter() - start, latencies

        return self.mindserve_run(lambda: asyncio.run(main()))

    def bulk4096(self) -> Result:
        instances = [
            {"x": row} for row in np.random.default_rng(2).normal(size=(4096, 256)).astype(np.float32)
        ]
        repeats = max(1, self.requests // 1000)

        def measure():
            calls, seconds, lat = timed_calls(lambda: self.rt.infer("mlp", "predict", instances), repeats)
            return 4096 * calls, seconds, lat

        return self.mindserve_run(measure)


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
    Config("bulk4096", "mindserve, one call of 4096 instances", Bench.bulk4096),
    *threads_pair(16),
    *threads_pair(256),
    *concurrency_pair(
        "futures",
        f"simple queue batcher, {FUTURES:,} futures submitted at once",
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
    parser.add_argument("--requests", type=int, default=3000, help="single-instance calls per sequential run")
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
    args = parser.parse_args()
    configs = select(args.only)
    print(describe())
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    with tempfile.TemporaryDirectory() as root:
        bench = Bench(export_mlp(os.path.join(root, "mlp")), args.requests)
        print(f"buckets after warm-up: {bench.buckets}")
        runs: dict[str, list[Result]] = {c.name: [] for c in configs}
        for round_ in range(args.rounds):
            if PAIRED & runs.keys():
                bench.pair_batch1()
            for config in configs:
                runs[config.name].append(config.run(bench))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        bench.rt.close()
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

    targets = [  # the execution-core issue's targets for this machine
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
            ">= 1.3x",
        ),
        ("one 4096-instance call / limit", ratio("bulk4096", "raw_batch64"), ">= 0.95x"),
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

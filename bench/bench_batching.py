"""Side-by-side throughput and latency of mindserve's batching, on one MLP, in one run.

    python bench/bench_batching.py [--rounds 3] [--requests 3000]

Model: MLP 256-1024-1024-10 exported to MindIR with a dynamic batch dimension, on the CPU.
Each configuration runs ``--rounds`` times, interleaved; the table shows medians across
rounds. Ratios compare with the raw batch-64 limit and the simple batcher, measured in the
same run (the machine is shared and noisy: compare ratios, not absolute figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from simple_batcher import SimpleBatcher  # noqa: E402

import mindserve  # noqa: E402

CALLERS = 64


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


def timed_calls(call, count: int) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - start, latencies


def in_threads(call, threads: int, per_thread: int) -> tuple[float, list[float]]:
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
    return time.perf_counter() - start, [x for lat in latencies for x in lat]


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

    def model_counts(self) -> tuple[int, int]:
        (model,) = self.rt.status()[0].models
        return model.batches, model.instances

    def mindserve_run(self, measure) -> Result:
        batches0, instances0 = self.model_counts()
        instances, seconds, latencies = measure()
        batches1, instances1 = self.model_counts()
        mean = (instances1 - instances0) / max(1, batches1 - batches0)
        return Result(instances, seconds, latencies, mean)

    # -- the configurations ----------------------------------------------------------

    def raw_batch1(self) -> Result:
        return self._paired[0]

    def raw_batch64(self) -> Result:
        calls = max(1, self.requests // 16)
        seconds, lat = timed_calls(lambda: self.raw(self.x64), calls)
        return Result(calls * 64, seconds, lat, 64)

    def simple_batcher(self) -> Result:
        batcher = SimpleBatcher(self.raw)
        per_thread = max(1, self.requests // CALLERS * 4)
        seconds, lat = in_threads(lambda: batcher.submit(self.x1[0]).result(), CALLERS, per_thread)
        batcher.close()
        return Result(CALLERS * per_thread, seconds, lat, batcher.instances / batcher.batches)

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
            self.rt.infer("mlp", "predict", [self.instance])
            served.append(time.perf_counter() - t)
        batches1, _ = self.model_counts()
        self._paired = (
            Result(self.requests, sum(raw), raw, 1),
            Result(self.requests, sum(served), served, self.requests / max(1, batches1 - batches0)),
        )

    def threads64(self) -> Result:
        per_thread = max(1, self.requests // CALLERS * 4)

        def measure():
            seconds, lat = in_threads(
                lambda: self.rt.infer("mlp", "predict", [self.instance]), CALLERS, per_thread
            )
            return CALLERS * per_thread, seconds, lat

        return self.mindserve_run(measure)

    def asyncio64(self) -> Result:
        per_task = max(1, self.requests // CALLERS * 4)

        async def task(latencies):
            for _ in range(per_task):
                t = time.perf_counter()
                await self.rt.ainfer("mlp", "predict", [self.instance])
                latencies.append(time.perf_counter() - t)

        async def main():
            latencies: list[float] = []
            start = time.perf_counter()
            await asyncio.gather(*(task(latencies) for _ in range(CALLERS)))
            return time.perf_counter() - start, latencies

        def measure():
            seconds, lat = asyncio.run(main())
            return CALLERS * per_task, seconds, lat

        return self.mindserve_run(measure)

    def bulk4096(self) -> Result:
        instances = [
            {"x": row} for row in np.random.default_rng(2).normal(size=(4096, 256)).astype(np.float32)
        ]
        repeats = max(1, self.requests // 1000)

        def measure():
            seconds, lat = timed_calls(lambda: self.rt.infer("mlp", "predict", instances), repeats)
            return 4096 * repeats, seconds, lat

        return self.mindserve_run(measure)


CONFIGS = [
    ("raw MindSpore, batch 1, sequential (interleaved with the next row)", "raw_batch1"),
    ("raw MindSpore, batch 64, sequential (the limit)", "raw_batch64"),
    ("simple queue batcher, 64 threads (baseline)", "simple_batcher"),
    ("mindserve, 1 caller (interleaved with raw batch 1)", "lone_caller"),
    ("mindserve, 64 caller threads", "threads64"),
    ("mindserve, 64 asyncio tasks", "asyncio64"),
    ("mindserve, one call of 4096 instances", "bulk4096"),
]


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
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    with tempfile.TemporaryDirectory() as root:
        bench = Bench(export_mlp(os.path.join(root, "mlp")), args.requests)
        print(f"buckets after warm-up: {bench.buckets}")
        runs: dict[str, list[Result]] = {attr: [] for _, attr in CONFIGS}
        for round_ in range(args.rounds):
            bench.pair_batch1()
            for _, attr in CONFIGS:
                runs[attr].append(getattr(bench, attr)())
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        bench.rt.close()

    def med(attr: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[attr])

    limit = med("raw_batch64", "throughput")
    baseline = med("simple_batcher", "throughput")
    print(
        f"\nmedians of {args.rounds} rounds; MLP 256-1024-1024-10, CPU, {os.cpu_count()} cores, "
        f"switch interval {sys.getswitchinterval() * 1e3:g} ms\n"
    )
    print("| configuration | instances/s | p50 ms | p99 ms | mean batch | vs limit | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, attr in CONFIGS:
        tput = med(attr, "throughput")
        print(
            f"| {label} | {tput:,.0f} | {med(attr, 'p50'):.3f} | {med(attr, 'p99'):.3f} | "
            f"{med(attr, 'mean_batch'):.1f} | {tput / limit:.2f}x | {tput / baseline:.2f}x |"
        )
    lone = statistics.median(r.p50 / b.p50 for r, b in zip(runs["lone_caller"], runs["raw_batch1"]))
    threads = med("threads64", "throughput")
    print("\ntargets (ratios within each round, median across rounds):")
    print(f"- lone caller p50 / raw batch-1 p50: {lone:.2f}x (target <= 1.15x)")
    print(f"- 64 threads / simple batcher throughput: {threads / baseline:.2f}x (target >= 1.5x)")
    print(f"- 64 threads / raw batch-64 limit: {threads / limit:.2f}x (target >= 0.6x)")
    p99 = statistics.median(r.p99 / b.p99 for r, b in zip(runs["threads64"], runs["simple_batcher"]))
    print(f"- 64 threads p99 / simple batcher p99: {p99:.2f}x (target <= 1.0x)")
    print(f"- one 4096-instance call / limit: {med('bulk4096', 'throughput') / limit:.2f}x (target >= 0.85x)")


if __name__ == "__main__":
    main()

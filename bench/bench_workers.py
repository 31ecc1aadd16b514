"""Worker processes side by side with in-process serving and with raw MindSpore processes.

    python bench/bench_workers.py [--rounds 3] [--seconds 4]

Rows, each run ``--rounds`` times interleaved (the table shows medians across rounds, and
ratios per round, then their median: the machine is shared and noisy):

* ``raw x1`` / ``raw x2``: one, then two side-by-side MindSpore processes running the MLP at
  batch 64 in a loop with no serving at all: the limit that worker processes approach.
* ``mlp in-process`` / ``mlp 1 worker`` / ``mlp 2 workers``: 64 threads calling
  ``Runtime.infer`` with one instance each on the MLP (256-1024-1024-10, MindIR, CPU).
* ``mlp x16 ...``: the same with 16 instances per call, where the callers' own Python
  (about 30 us per call in this process) no longer hides what serving and the model cost.
* ``heavy ...``: the same, through a batched Python stage that spends about 1 ms of pure
  Python per instance before the MLP: work that holds the GIL, which only processes spread.

The per-batch IPC cost is the round trip a worker's batches took as seen from the main
process minus the time the worker spent running them (``WorkerInfo.transfer_seconds``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _machine import describe  # noqa: E402
from bench_batching import export_mlp  # noqa: E402

import mindserve  # noqa: E402

CALLERS = 64
RAW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np, mindspore as ms
    ms.set_device("CPU")
    net = ms.nn.GraphCell(ms.load(sys.argv[1]))
    x = ms.Tensor(np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32))
    for _ in range(20):
        net(x).asnumpy()
    start_at, seconds = float(sys.argv[2]), float(sys.argv[3])
    while time.time() < start_at:
        time.sleep(0.001)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        net(x).asnumpy()
        n += 64
    print(n / (time.perf_counter() - t0))
    """
)


def spin(x: np.ndarray) -> np.ndarray:
    """About 1 ms of pure Python (it holds the GIL), then the instance unchanged."""
    total = 0
    for i in range(20000):
        total += i * i
    return x if total >= 0 else -x


def servable(directory: str, heavy: bool) -> mindserve.Servable:
    svc = mindserve.Servable("heavy" if heavy else "mlp", directory=directory)
    mlp = svc.model("mlp.mindir")
    if heavy:

        @svc.stage(batch_size=16)
        def prepare(xs):
            return [spin(x) for x in xs]

        svc.add_method(lambda x: mlp(prepare(x)), name="predict", outputs="logits")
    else:
        svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    return svc


def raw(path: str, processes: int, seconds: float) -> float:
    """Instances per second of ``processes`` raw MindSpore loops run side by side (summed)."""
    start_at = time.time() + 8.0  # time for every process to import, load and warm up
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RAW_SCRIPT, path, str(start_at), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    return sum(float(child.communicate()[0].strip().splitlines()[-1]) for child in children)


def threads_calling(
    rt: mindserve.Runtime, name: str, seconds: float, per_call: int = 1
) -> tuple[float, float, float]:
    """64 threads call for ``seconds`` with ``per_call`` instances each time: instances/s,
    p50 and p99 call latency in ms."""
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(CALLERS, per_call, 256)).astype(np.float32)
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(CALLERS)]
    barrier = threading.Barrier(CALLERS + 1)

    def caller(k: int) -> None:
        instance = [{"x": x} for x in inputs[k]]
        barrier.wait()
        while not stop.is_set():
            t = time.perf_counter()
            rt.infer(name, "predict", instance)
            latencies[k].append(time.perf_counter() - t)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(x for lat in latencies for x in lat)
    return (
        len(ordered) * per_call / elapsed,
        ordered[len(ordered) // 2] * 1e3,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    )


def counters(rt: mindserve.Runtime, name: str) -> tuple[int, float, int, int]:
    """Worker batches and transfer seconds (all workers), model batches and instances."""
    workers = rt.servable_status(name).workers
    model = next(m for m in rt.status() if m.name == name).models[-1]  # the MLP
    return (
        sum(w.batches for w in workers),
        sum(w.transfer_seconds for w in workers),
        model.batches,
        model.instances,
    )


def measured(
    rt: mindserve.Runtime, name: str, seconds: float, per_call: int
) -> tuple[tuple[float, float, float], tuple[float, float]]:
    """One measurement: throughput and latencies, then IPC ms per worker batch and the
    MLP's mean batch size during it."""
    before = counters(rt, name)
    result = threads_calling(rt, name, seconds, per_call)
    after = counters(rt, name)
    batches, transfer, model_batches, instances = (a - b for a, b in zip(after, before))
    return result, (transfer / max(batches, 1) * 1e3, instances / max(model_batches, 1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement")
    args = parser.parse_args()
    print(describe())
    rows: dict[str, list[tuple[float, float, float]]] = {}
    ipc: dict[str, list[tuple[float, float]]] = {}  # per row: IPC ms per batch, mean MLP batch
    with tempfile.TemporaryDirectory() as root:
        directory = os.path.join(root, "mlp")
        path = export_mlp(directory)
        runtimes = {}
        for label, workers in (("in-process", None), ("1 worker", 1), ("2 workers", 2)):
            rt = mindserve.Runtime()
            rt.start(servable(directory, heavy=False), workers=workers)
            rt.start(servable(directory, heavy=True), workers=workers)
            runtimes[label] = rt
        for round_ in range(args.rounds):
            rows.setdefault("raw x1", []).append((raw(path, 1, args.seconds), 0.0, 0.0))
            rows.setdefault("raw x2", []).append((raw(path, 2, args.seconds), 0.0, 0.0))
            for name, per_call in (("mlp", 1), ("mlp", 16), ("heavy", 1)):
                for label, rt in runtimes.items():
                    row = f"{name} {label}" if per_call == 1 else f"{name} x{per_call} {label}"
                    result, costs = measured(rt, name, args.seconds, per_call)
                    rows.setdefault(row, []).append(result)
                    ipc.setdefault(row, []).append(costs)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        for rt in runtimes.values():
            rt.close()
    report(rows, ipc, args.rounds)


def report(
    rows: dict[str, list[tuple[float, float, float]]], ipc: dict[str, list[tuple[float, float]]], rounds: int
) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    print(f"\n{CALLERS} threads; medians of {rounds} rounds; latency per call")
    print(f"{'row':22} {'inst/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'IPC ms/batch':>13} {'mean batch':>11}")
    for row, results in rows.items():
        through = median([r[0] for r in results])
        p50 = median([r[1] for r in results])
        p99 = median([r[2] for r in results])
        cost = f"{median([c[0] for c in ipc[row]]):.3f}" if row in ipc and "worker" in row else ""
        batch = f"{median([c[1] for c in ipc[row]]):.1f}" if row in ipc else ""
        latency = (f"{p50:8.2f} {p99:8.2f}") if p50 else f"{'':8} {'':8}"
        print(f"{row:22} {through:9.0f} {latency} {cost:>13} {batch:>11}")

    def ratio(a: str, b: str) -> str:
        per_round = [x[0] / y[0] for x, y in zip(rows[a], rows[b])]
        return f"{median(per_round):.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"

    print("\nratios (median of per-round ratios, range), target in brackets")
    print(f"  raw x2 / raw x1                    {ratio('raw x2', 'raw x1')}")
    print(f"  mlp 2 workers / raw x2             {ratio('mlp 2 workers', 'raw x2')}")
    print(f"  mlp 2 workers / mlp in-process     {ratio('mlp 2 workers', 'mlp in-process')}   [>= 1.3x]")
    print(f"  mlp 1 worker / mlp in-process      {ratio('mlp 1 worker', 'mlp in-process')}   [>= 0.9x]")
    print(f"  heavy 2 workers / heavy in-process {ratio('heavy 2 workers', 'heavy in-process')}   [>= 1.6x]")
    print(f"  mlp x16 2 workers / raw x2         {ratio('mlp x16 2 workers', 'raw x2')}   [>= 0.9x]")
    print(f"  mlp x16 2 workers / in-process     {ratio('mlp x16 2 workers', 'mlp x16 in-process')}")
    print(f"  mlp x16 1 worker / in-process      {ratio('mlp x16 1 worker', 'mlp x16 in-process')}")
    print(f"  heavy 1 worker / heavy in-process  {ratio('heavy 1 worker', 'heavy in-process')}")


if __name__ == "__main__":
    main()

"""Start-up of a model the padding probe pads, in worker processes: what the main process adds.

    python bench/bench_worker_plan.py [--rounds 5] [--workers 2]

Model: a per-token network written here ((batch, length, 8) -> (batch, length, 4), a matmul
and a ReLU; random weights) exported to MindIR with dynamic batch and length dimensions,
served with no ``Padding``: the load-time probe runs it unpadded and padded and finds
padding safe. Each round starts it in ``--workers`` worker processes with warm-up off
(``Runtime(warm_up=False)``) and reports the whole ``rt.start`` (the workers' own loading,
probe included), the main process's part of the model's load (``WorkerPlacement.load_model``:
building the model's queue on the workers' plan) and the model batches the main process sent
to the workers during the load (the probe's two, when the main process probed again).
Compare the main process's part, not the whole start, across trees: the workers' loading
dominates it and varies with the machine's load. Progress and results go to stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _machine import describe

import mindserve
from mindserve._workers import placement as worker_placement


def export_per_token(directory: str) -> None:
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn, ops

    class PerToken(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            weights = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
            self.w = ms.Parameter(Tensor(weights), name="w")
            self.relu = nn.ReLU()

        def construct(self, x):
            return self.relu(ops.matmul(x, self.w))

    os.makedirs(os.path.join(directory, "1"), exist_ok=True)
    path = os.path.join(directory, "1", "per_token")
    ms.export(
        PerToken(), Tensor(shape=[None, None, 8], dtype=ms.float32), file_name=path, file_format="MINDIR"
    )


def servable(directory: str) -> mindserve.Servable:
    svc = mindserve.Servable("per_token", directory=directory)
    model = svc.model("per_token.mindir")  # no Padding: the load-time probe decides
    svc.add_method(lambda x: model(x), name="run", outputs="y")
    return svc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(describe())
    print(f"mindserve from {os.path.dirname(mindserve.__file__)}")
    spent: list[float] = []
    load_model = worker_placement.WorkerPlacement.load_model

    def timed(self, *a, **k):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return load_model(self, *a, **k)
        finally:
            spent.append(time.perf_counter() - started)

    worker_placement.WorkerPlacement.load_model = timed  # type: ignore[method-assign]
    starts, parts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        export_per_token(tmp)
        for round_ in range(1, args.rounds + 1):
            with mindserve.Runtime(warm_up=False) as rt:
                started = time.perf_counter()
                (info,) = rt.start(servable(tmp), workers=args.workers).models
                start = time.perf_counter() - started
                slots = rt._hosted["per_token"].default().placement.pool._slots
                sent = sum(slot.batches for slot in slots)
            starts.append(start)
            parts.append(spent[-1])
            print(
                f"round {round_}: start {start:.2f} s; main process's part of the model's load "
                f"{spent[-1] * 1000:.2f} ms; batches it sent during the load {sent}; padded "
                f"{info.lengths is not None}; load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    print(
        f"median: start {statistics.median(starts):.2f} s, main process's part "
        f"{statistics.median(parts) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()

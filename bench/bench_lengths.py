"""Variable-length inputs: a transformer encoder under 64 callers sending random lengths.

    python bench/bench_lengths.py [--seconds 10] [--callers 64] [--only SUBSTRING ...]

Model: a transformer encoder written here (token embedding, 2 encoder layers of single-head
attention with an attention mask and a feed-forward block, dim 128; random weights), exported
to MindIR with dynamic batch and sequence dimensions; it returns per-token states and a
masked mean. Two length mixes: ``uniform`` (lengths 8-512) and ``skewed`` (90% 8-64, 10%
256-512). Rows, per mix:

* ``buckets``: mindserve with length buckets (``Padding(mask=..., outputs=...)``, powers of two
  8-512; the warm-up compiles every batch bucket at every length bucket before the run);
* ``exact``: mindserve batching only instances of one exact shape (``Padding(enabled=False)``,
  callers send the mask themselves): each new length is a new batch and a new compile;
* ``raw``: each instance called on the network directly, batch 1, unpadded, one thread.

Each row runs for ``--seconds`` after its start-up; it reports throughput (instances/s),
p50/p99 latency of a call, graph compiles during the measured run (distinct input shapes
run, ``ModelInfo.graphs``), mean batch size, and padding waste (padded elements per real
element, from ``rt.metrics()``). Compare ratios within one run, on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _machine import describe  # noqa: E402

import mindserve  # noqa: E402

VOCAB, DIM, LONGEST = 1000, 128, 512


def export_encoder(directory: str) -> str:
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    rng = np.random.default_rng(0)

    def weights(*shape, scale=0.05):
        return ms.Parameter(Tensor(rng.normal(0, scale, shape).astype(np.float32)))

    class Layer(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.wq, self.wk, self.wv, self.wo = (weights(DIM, DIM) for _ in range(4))
            self.w1, self.w2 = weights(DIM, 4 * DIM), weights(4 * DIM, DIM)
            self.scores, self.mix = ops.BatchMatMul(transpose_b=True), ops.BatchMatMul()
            self.softmax, self.relu = nn.Softmax(axis=-1), nn.ReLU()
            self.scale = Tensor(np.float32(DIM**-0.5))

        def construct(self, x, bias):
            q, k, v = ops.matmul(x, self.wq), ops.matmul(x, self.wk), ops.matmul(x, self.wv)
            x = x + ops.matmul(self.mix(self.softmax(self.scores(q, k) * self.scale + bias), v), self.wo)
            return x + ops.matmul(self.relu(ops.matmul(x, self.w1)), self.w2)

    class Encoder(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = weights(VOCAB, DIM, scale=1.0)
            self.layers = nn.CellList([Layer(), Layer()])
            self.gather, self.expand = ops.Gather(), ops.ExpandDims()
            self.big = Tensor(np.float32(1e9))

        def construct(self, ids, mask):
            x = self.gather(self.embedding, ids, 0)
            bias = self.expand((mask - ops.ones_like(mask)) * self.big, 1)
            for layer in self.layers:
                x = layer(x, bias)
            weights_ = self.expand(mask, 2)
            return x, (x * weights_).sum(axis=1) / weights_.sum(axis=1)

    os.makedirs(os.path.join(directory, "1"), exist_ok=True)
    ms.export(
        Encoder(),
        Tensor(shape=[None, None], dtype=ms.int32),
        Tensor(shape=[None, None], dtype=ms.float32),
        file_name=os.path.join(directory, "1", "encoder"),
        file_format="MINDIR",
    )
    return os.path.join(directory, "1", "encoder.mindir")


def lengths_of(mix: str, seed: int) -> Iterator[int]:
    """Endless lengths of a mix: ``uniform`` 8-512, ``skewed`` 90% 8-64 and 10% 256-512."""
    rng = random.Random(seed)
    while True:
        if mix == "uniform":
            yield rng.randint(8, LONGEST)
        else:
            yield rng.randint(8, 64) if rng.random() < 0.9 else rng.randint(256, LONGEST)


def servable(directory: str, buckets: bool) -> mindserve.Servable:
    svc = mindserve.Servable("encoder", directory=directory)
    if buckets:
        padding = mindserve.Padding(mask={1: 0}, outputs={0: 0}, max_length=LONGEST)
        encoder = svc.model("encoder.mindir", outputs=2, padding=padding)
        svc.add_method(lambda ids: encoder(ids), name="encode", outputs=["tokens", "pooled"])
    else:
        encoder = svc.model("encoder.mindir", outputs=2, padding=mindserve.Padding(enabled=False))
        svc.add_method(lambda ids, mask: encoder(ids, mask), name="encode", outputs=["tokens", "pooled"])
    return svc


def instance(length: int, rng: np.random.Generator, with_mask: bool) -> dict[str, np.ndarray]:
    ids = rng.integers(1, VOCAB, size=length).astype(np.int32)
    return {"ids": ids, "mask": np.ones(length, np.float32)} if with_mask else {"ids": ids}


def run_mindserve(directory: str, mix: str, buckets: bool, seconds: float, callers: int) -> dict[str, float]:
    with mindserve.Runtime() as rt:
        started = time.perf_counter()
        (model,) = rt.start(servable(directory, buckets)).models
        start_up = time.perf_counter() - started
        before = model.graphs or 0
        latencies: list[float] = []
        done = [0]
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def caller(k: int) -> None:
            rng = np.random.default_rng(k)
            mine = []
            for length in lengths_of(mix, k):
                if time.monotonic() > deadline:
                    break
                t = time.perf_counter()
                rt.infer("encoder", "encode", [instance(length, rng, not buckets)])
                mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)
                done[0] += len(mine)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - t0
        (info,) = [m for s in rt.status() for m in s.models]
        (metrics,) = rt.metrics().servable("encoder").models
    ordered = sorted(latencies) or [float("nan")]
    return {
        "throughput": done[0] / took,
        "p50": ordered[len(ordered) // 2] * 1e3,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "compiles": (info.graphs or 0) - before,
        "mean_batch": info.mean_batch_size,
        "waste": metrics.padded_elements / metrics.elements if metrics.elements else 1.0,
        "start_up": start_up,
    }


def run_raw(path: str, mix: str, seconds: float) -> dict[str, float]:
    import mindspore as ms

    network = ms.nn.GraphCell(ms.load(path))
    rng = np.random.default_rng(0)
    shapes: set[int] = set()
    latencies = []
    deadline = time.monotonic() + seconds
    t0 = time.perf_counter()
    with mindserve.mindspore_lock():
        for length in lengths_of(mix, 0):
            if time.monotonic() > deadline:
                break
            ids = rng.integers(1, VOCAB, size=(1, length)).astype(np.int32)
            t = time.perf_counter()
            tokens, _ = network(ms.Tensor(ids), ms.Tensor(np.ones((1, length), np.float32)))
            tokens.asnumpy()
            latencies.append(time.perf_counter() - t)
            shapes.add(length)
    took = time.perf_counter() - t0
    ordered = sorted(latencies)
    return {
        "throughput": len(latencies) / took,
        "p50": ordered[len(ordered) // 2] * 1e3,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "compiles": len(shapes),
        "mean_batch": 1.0,
        "waste": 1.0,
        "start_up": 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--only", nargs="*", default=None, help="rows whose name contains one of these")
    args = parser.parse_args()
    print(describe())
    print(
        f"transformer encoder dim {DIM}, 2 layers, lengths up to {LONGEST}; {args.callers} callers, {args.seconds} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = export_encoder(os.path.join(tmp, "encoder"))
        directory = os.path.join(tmp, "encoder")
        rows = []
        for mix in ("uniform", "skewed"):
            for name in ("buckets", "exact", "raw"):
                label = f"{mix}/{name}"
                if args.only and not any(s in label for s in args.only):
                    continue
                if name == "raw":
                    result = run_raw(path, mix, args.seconds)
                else:
                    result = run_mindserve(directory, mix, name == "buckets", args.seconds, args.callers)
                rows.append((label, result))
                print(
                    f"{label:16} {result['throughput']:9.1f} inst/s  p50 {result['p50']:8.1f} ms  "
                    f"p99 {result['p99']:8.1f} ms  compiles {result['compiles']:4d}  "
                    f"mean batch {result['mean_batch']:5.1f}  padded/real {result['waste']:4.2f}  "
                    f"start-up {result['start_up']:6.1f} s",
                    flush=True,
                )
        found = dict(rows)
        for mix in ("uniform", "skewed"):
            if f"{mix}/buckets" in found:
                a = found[f"{mix}/buckets"]["throughput"]
                for other in ("exact", "raw"):
                    if found.get(f"{mix}/{other}", {}).get("throughput"):
                        print(f"{mix}: buckets / {other} = {a / found[f'{mix}/{other}']['throughput']:.2f}x")


if __name__ == "__main__":
    main()

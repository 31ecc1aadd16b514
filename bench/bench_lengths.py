"""Variable-length inputs: a transformer encoder under 64 callers sending random lengths.

    python bench/bench_lengths.py [--seconds 10] [--callers 64] [--resnet-seconds 10]
                                  [--resnet-width 64] [--only SUBSTRING ...]

Model: a transformer encoder written here (token embedding, 2 encoder layers of single-head
attention with an attention mask and a feed-forward block, dim 128; random weights), exported
to MindIR with dynamic batch and sequence dimensions; it returns per-token states and a
masked mean. Two length mixes: ``uniform`` (lengths 8-512) and ``skewed`` (90% 8-64, 10%
256-512). Rows, per mix:

* ``buckets``: mindserve with length buckets (``Padding(mask=..., outputs=...)``, the default
  8, 12, 16, 24, ..., 384, 512; the warm-up compiles every batch bucket at every length
  bucket before the run);
* ``exact``: mindserve batching only instances of one exact shape (``Padding(enabled=False)``,
  callers send the mask themselves): each new length is a new batch and a new compile;
* ``raw``: each instance called on the network directly, batch 1, unpadded, one thread.

Each row runs for ``--seconds`` after its start-up; it reports throughput (instances/s),
p50/p99 latency of a call, graph compiles during the measured run (distinct input shapes
run, ``ModelInfo.graphs``), mean batch size, and padding waste: padded elements per real
element (the length padding of the instances, from ``rt.metrics()``) and, "as run", the
same with the rows added to reach a batch bucket (from the last batches of
``rt.batch_log()``). Compare ratios within one run, on an idle machine.

Then a compute-bound image model: a ResNet-18-like CNN written here (``--resnet-width``
channels in its first stage, 64 as ResNet-18; random weights) at 3x224x224, exported with
a dynamic batch dimension. ``resnet/raw``: one compile-and-run per batch bucket (1, 2, 4,
..., 32) on a fresh network, then batches of 32 for ``--resnet-seconds``; ``resnet/mindserve``:
its start-up (load and warm-up of the same buckets), then ``--callers`` threads sending one
image per call, batched up to 32. It prints mindserve / raw batch 32 throughput and the
start-up / compile-and-run per bucket. ``--only resnet`` runs only these rows.
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
#: The ResNet-18-like row: image shape, the raw batch and mindserve's max_batch_size, and
#: the batch buckets mindserve warms up (its default: powers of two up to max_batch_size).
IMAGE = (3, 224, 224)
RESNET_BATCH = 32
RESNET_BUCKETS = (1, 2, 4, 8, 16, 32)


def in_threads(caller, callers: int) -> float:
    """Run ``caller(k)`` in ``callers`` threads at once; the seconds until the last ended."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


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

        took = in_threads(caller, callers)
        (info,) = [m for s in rt.status() for m in s.models]
        (metrics,) = rt.metrics().servable("encoder").models
        log = [b for b in rt.batch_log("encoder") if b.elements]
        # the last batches' elements as run, rows added to reach a batch bucket included
        run = sum(b.padded_elements * b.padded_to / b.size for b in log)
        as_run = run / sum(b.elements for b in log) if log else 1.0
    ordered = sorted(latencies) or [float("nan")]
    return {
        "throughput": done[0] / took,
        "p50": ordered[len(ordered) // 2] * 1e3,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "compiles": (info.graphs or 0) - before,
        "mean_batch": info.mean_batch_size,
        "waste": metrics.padded_elements / metrics.elements if metrics.elements else 1.0,
        "as_run": as_run,
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
        "as_run": 1.0,
        "start_up": 0.0,
    }


def export_resnet(directory: str, width: int = 64) -> str:
    """A ResNet-18-like CNN (stem, 4 stages of 2 basic blocks of ``width`` to 8x ``width``
    channels, 64-512 as ResNet-18 has them by default; pooled, 1000 classes; random weights)
    at 3x224x224, exported with a dynamic batch dimension."""
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    def conv(cin: int, cout: int, size: int, stride: int) -> nn.Cell:
        return nn.Conv2d(cin, cout, size, stride=stride, pad_mode="same", has_bias=False)

    class Block(nn.Cell):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.SequentialCell(
                [
                    conv(cin, cout, 3, stride),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(),
                    conv(cout, cout, 3, 1),
                    nn.BatchNorm2d(cout),
                ]
            )
            same = stride == 1 and cin == cout
            self.skip = (
                nn.Identity()
                if same
                else nn.SequentialCell([conv(cin, cout, 1, stride), nn.BatchNorm2d(cout)])
            )
            self.relu = nn.ReLU()

        def construct(self, x):
            return self.relu(self.body(x) + self.skip(x))

    class ResNet18(nn.Cell):
        def __init__(self, w: int) -> None:
            super().__init__()
            stem = [conv(3, w, 7, 2), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(3, 2, pad_mode="same")]
            widths = [(w, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1)]
            widths += [(2 * w, 4 * w, 2), (4 * w, 4 * w, 1), (4 * w, 8 * w, 2), (8 * w, 8 * w, 1)]
            self.features = nn.SequentialCell(stem + [Block(*w) for w in widths])
            self.mean = ops.ReduceMean(keep_dims=False)
            self.fc = nn.Dense(8 * w, 1000)

        def construct(self, x):
            return self.fc(self.mean(self.features(x), (2, 3)))

    network = ResNet18(width)
    network.set_train(False)
    os.makedirs(os.path.join(directory, "1"), exist_ok=True)
    shape = [None, *IMAGE]
    ms.export(
        network,
        Tensor(shape=shape, dtype=ms.float32),
        file_name=os.path.join(directory, "1", "resnet"),
        file_format="MINDIR",
    )
    return os.path.join(directory, "1", "resnet.mindir")


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, *IMAGE)).astype(np.float32)


def resnet_raw(path: str, seconds: float) -> dict[str, float]:
    """Raw MindSpore: one compile-and-run per batch bucket (a fresh network), then batches of
    ``RESNET_BATCH`` for ``seconds``."""
    import mindspore as ms

    started = time.perf_counter()
    network = ms.nn.GraphCell(ms.load(path))
    with mindserve.mindspore_lock():
        for size in RESNET_BUCKETS:
            t = time.perf_counter()
            network(ms.Tensor(images(size, size))).asnumpy()
            print(f"  raw compile-and-run, batch {size}: {time.perf_counter() - t:.2f} s", flush=True)
        compile_and_run = time.perf_counter() - started
        batch = ms.Tensor(images(RESNET_BATCH, 0))
        done = 0
        deadline = time.monotonic() + seconds
        t0 = time.perf_counter()
        while time.monotonic() < deadline or done < 2 * RESNET_BATCH:  # 2 batches at least
            network(batch).asnumpy()
            done += RESNET_BATCH
        took = time.perf_counter() - t0
    return {"throughput": done / took, "start_up": compile_and_run}


def resnet_mindserve(directory: str, seconds: float, callers: int) -> dict[str, float]:
    """mindserve: ``callers`` threads sending one image per call, batched up to ``RESNET_BATCH``."""
    svc = mindserve.Servable("resnet", directory=directory)
    resnet = svc.model("resnet.mindir", batching=mindserve.Batching(max_batch_size=RESNET_BATCH))
    svc.add_method(lambda image: resnet(image), name="classify", outputs="logits")
    with mindserve.Runtime() as rt:
        started = time.perf_counter()
        (model,) = rt.start(svc).models
        start_up = time.perf_counter() - started
        graphs = model.graphs
        latencies: list[float] = []
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def caller(k: int) -> None:
            image = images(1, k)[0]
            mine = []
            while time.monotonic() < deadline:
                t = time.perf_counter()
                rt.infer("resnet", "classify", [{"image": image}])
                mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)

        took = in_threads(caller, callers)
        (info,) = [m for s in rt.status() for m in s.models]
    ordered = sorted(latencies) or [float("nan")]
    return {
        "throughput": len(latencies) / took,
        "p50": ordered[len(ordered) // 2] * 1e3,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "mean_batch": info.mean_batch_size,
        "graphs": graphs,
        "start_up": start_up,
    }


def run_resnet(tmp: str, seconds: float, callers: int, width: int) -> None:
    directory = os.path.join(tmp, "resnet")
    path = export_resnet(directory, width)
    print(f"ResNet-18-like CNN at {'x'.join(map(str, IMAGE))}, widths {width}-{8 * width}", flush=True)
    raw = resnet_raw(path, seconds)
    print(
        f"resnet/raw       {raw['throughput']:9.1f} img/s  batch {RESNET_BATCH}; one compile-and-run per "
        f"bucket {RESNET_BUCKETS}: {raw['start_up']:.1f} s",
        flush=True,
    )
    served = resnet_mindserve(directory, seconds, callers)
    print(
        f"resnet/mindserve {served['throughput']:9.1f} img/s  p50 {served['p50']:8.1f} ms  "
        f"p99 {served['p99']:8.1f} ms  mean batch {served['mean_batch']:5.1f}  "
        f"start-up {served['start_up']:.1f} s ({served['graphs']} graphs)",
        flush=True,
    )
    print(
        f"resnet: mindserve / raw batch {RESNET_BATCH} = {served['throughput'] / raw['throughput']:.2f}x; "
        f"start-up / compile-and-run per bucket = {served['start_up'] / raw['start_up']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--resnet-seconds", type=float, default=10.0, help="each ResNet-18-like row's run")
    parser.add_argument(
        "--resnet-width", type=int, default=64, help="the CNN's first stage's channels (ResNet-18: 64)"
    )
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
                    f"mean batch {result['mean_batch']:5.1f}  padded/real {result['waste']:4.2f} "
                    f"(as run {result['as_run']:4.2f})  "
                    f"start-up {result['start_up']:6.1f} s",
                    flush=True,
                )
        if not args.only or any(s in "resnet" for s in args.only):
            run_resnet(tmp, args.resnet_seconds, args.callers, args.resnet_width)
        found = dict(rows)
        for mix in ("uniform", "skewed"):
            if f"{mix}/buckets" in found:
                a = found[f"{mix}/buckets"]["throughput"]
                for other in ("exact", "raw"):
                    if found.get(f"{mix}/{other}", {}).get("throughput"):
                        print(f"{mix}: buckets / {other} = {a / found[f'{mix}/{other}']['throughput']:.2f}x")


if __name__ == "__main__":
    main()

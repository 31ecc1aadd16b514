"""Start-up time of a small image CNN: compiling by hand vs mindserve's start, side by side.

    python bench/bench_startup.py [--rounds 3]

Model: a CNN on 3x96x96 float32 images (conv 3x3 32/64/128, pad_mode same, each with ReLU
and 2x2 max pooling; flatten; Dense 18432-256, ReLU, Dense 256-10) exported to MindIR with
a dynamic batch dimension, on the CPU. Three ways to get it ready, each in a fresh
subprocess (MindSpore's compile caches live in the process), interleaved over ``--rounds``:

  by hand     ms.load + GraphCell, then one call on zeros at each batch size 1, 2, ..., 64
              (one compile-and-run per bucket); "total" = load + every bucket
  default     rt.start(svc) with the model's default batching (warm-up of every bucket)
  no warm-up  rt.start(svc) with Runtime(warm_up=False)

MindSpore is imported, and the Servable and Runtime built, before the clock starts. The
table shows medians across rounds. Progress goes to stderr; a round takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _machine import describe

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SHAPE = (3, 96, 96)
MODES = {
    "by_hand": "by hand: load + one call per batch size",
    "default": "mindserve rt.start, default (warm-up on)",
    "no_warm_up": "mindserve rt.start, warm-up off",
}
RESULT_PREFIX = "RESULT "


# -- the workers, each run in its own subprocess ---------------------------------------


def export_cnn(directory: str) -> None:
    import mindspore as ms
    from mindspore import nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, pad_mode="same"), nn.ReLU(), nn.MaxPool2d(2, 2)]

    class CNN(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.SequentialCell(
                *block(3, 32),
                *block(32, 64),
                *block(64, 128),
                nn.Flatten(),
                nn.Dense(128 * 12 * 12, 256),
                nn.ReLU(),
                nn.Dense(256, 10),
            )

        def construct(self, x):
            return self.body(x)

    ms.set_seed(0)
    os.makedirs(os.path.join(directory, "1"), exist_ok=True)
    ms.export(
        CNN(),
        ms.Tensor(shape=[None, *SHAPE], dtype=ms.float32),
        file_name=os.path.join(directory, "1", "cnn"),
        file_format="MINDIR",
    )


def run_by_hand(directory: str) -> dict:
    import mindspore as ms
    import numpy as np

    t0 = time.perf_counter()
    net = ms.nn.GraphCell(ms.load(os.path.join(directory, "1", "cnn.mindir")))
    load = time.perf_counter() - t0
    buckets = {}
    for batch in BUCKETS:
        t = time.perf_counter()
        net(ms.Tensor(np.zeros((batch, *SHAPE), np.float32))).asnumpy()
        buckets[batch] = time.perf_counter() - t
        print(f"  by hand: batch {batch} {buckets[batch]:.1f} s", file=sys.stderr, flush=True)
    return {"seconds": time.perf_counter() - t0, "load": load, "buckets": buckets}


def run_mindserve(directory: str, warm_up: bool) -> dict:
    import mindspore  # noqa: F401  (imported before the clock, as in by_hand)

    import mindserve

    records: list[tuple[float, str]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.created, record.getMessage()))

    logger = logging.getLogger("mindserve")
    logger.setLevel(logging.INFO)
    logger.addHandler(Capture())

    svc = mindserve.Servable("cnn", directory=directory)
    cnn = svc.model("cnn.mindir", with_batch_dim=True)
    svc.add_method(lambda x: cnn(x), name="predict", outputs="logits")
    with mindserve.Runtime(warm_up=warm_up) as rt:
        t0_wall = time.time()
        t0 = time.perf_counter()
        info = rt.start(svc)
        seconds = time.perf_counter() - t0
        model = info.models[0]
        return {
            "seconds": seconds,
            "options": "defaults" if warm_up else "Runtime(warm_up=False)",
            "buckets": list(model.batching.buckets or ()),
            "warmed_up": list(model.warmed_up),
            "logs": [f"+{created - t0_wall:.2f} s {message}" for created, message in records],
        }


def worker(mode: str, directory: str) -> None:
    if mode == "export":
        export_cnn(directory)
        result: dict = {}
    elif mode == "by_hand":
        result = run_by_hand(directory)
    else:
        result = run_mindserve(directory, warm_up=(mode == "default"))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# -- the driver ----------------------------------------------------------------------------


def spawn(mode: str, directory: str) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", mode, "--dir", directory],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"worker {mode} failed with exit code {proc.returncode}:\n{proc.stdout}")
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    return json.loads(line[len(RESULT_PREFIX) :])


def report(runs: dict[str, list[dict]], rounds: int) -> None:
    def med(values) -> float:
        return statistics.median(values)

    def bar(values, fmt: str = ".1f") -> str:
        return " / ".join(format(v, fmt) for v in values)

    print(f"\nmedians of {rounds} round(s); seconds; each run in a fresh process\n")
    print("| configuration | median s | all rounds s |")
    print("| --- | ---: | --- |")
    for mode, label in MODES.items():
        seconds = [r["seconds"] for r in runs[mode]]
        print(f"| {label} | {med(seconds):.1f} | {bar(seconds)} |")

    hand = runs["by_hand"]
    print("\nby hand, per step (median s; all rounds):")
    print(
        f"- load (ms.load + GraphCell): {med(r['load'] for r in hand):.2f} ({bar((r['load'] for r in hand), '.2f')})"
    )
    for batch in BUCKETS:
        times = [r["buckets"][str(batch)] for r in hand]
        print(f"- batch {batch}: {med(times):.1f} ({bar(times)})")

    ratios = [d["seconds"] / h["seconds"] for d, h in zip(runs["default"], hand)]
    off = [n["seconds"] / h["seconds"] for n, h in zip(runs["no_warm_up"], hand)]
    print("\nratios (within each round, median across rounds):")
    print(f"- default start / by hand: {med(ratios):.2f}x ({bar(ratios, '.2f')})")
    print(f"- warm-up off start / by hand: {med(off):.2f}x ({bar(off, '.2f')})")

    for mode in ("default", "no_warm_up"):
        last = runs[mode][-1]
        print(
            f"\n{MODES[mode]} (options: {last['options']}): buckets kept {last['buckets']}, "
            f"warmed up {last['warmed_up']}"
        )
        print("mindserve INFO logs (last round; time from rt.start):")
        for line in last["logs"] or ["(none)"]:
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=["export", *MODES], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.dir)
        return

    print(describe())
    with tempfile.TemporaryDirectory() as root:
        directory = os.path.join(root, "cnn")
        spawn("export", directory)
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        started = time.perf_counter()
        for round_ in range(args.rounds):
            for mode in MODES:
                print(f"round {round_ + 1}/{args.rounds}: {mode} ...", file=sys.stderr, flush=True)
                runs[mode].append(spawn(mode, directory))
                print(
                    f"round {round_ + 1}/{args.rounds}: {mode} {runs[mode][-1]['seconds']:.1f} s "
                    f"(elapsed {time.perf_counter() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    report(runs, args.rounds)


if __name__ == "__main__":
    main()

"""Hot update under load: swap MLP versions while 64 threads keep calling.

    python bench/bench_hot_update.py [--rounds 3] [--seconds 2]

Each round starts version 1, lets 64 caller threads send single-instance calls for
``--seconds`` (steady state), runs ``Runtime.update`` to version 2 while they go on, then
lets them run ``--seconds`` more. It reports failed calls (must be 0), latency in steady
state and during the swap (from the start of ``update`` until the old version unloaded),
the time ``update`` took (load and warm-up of the new version), and the process's peak
resident memory while two versions were loaded, next to the steady-state figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import psutil

import mindserve

CALLERS = 64


def export_versions(root: str) -> str:
    import mindspore as ms
    from mindspore import nn

    for version in (1, 2):
        ms.set_seed(version)
        net = nn.SequentialCell(
            nn.Dense(256, 1024), nn.ReLU(), nn.Dense(1024, 1024), nn.ReLU(), nn.Dense(1024, 10)
        )
        os.makedirs(os.path.join(root, str(version)))
        ms.export(
            net,
            ms.Tensor(shape=[None, 256], dtype=ms.float32),
            file_name=os.path.join(root, str(version), "mlp"),
            file_format="MINDIR",
        )
    return root


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3 if ordered else float("nan")


def one_round(root: str, seconds: float) -> dict[str, float]:
    svc = mindserve.Servable("mlp", directory=root)
    mlp = svc.model("mlp.mindir")
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    process = psutil.Process()
    unloaded = threading.Event()
    calls: list[tuple[float, float]] = []  # (start, latency)
    failures: list[BaseException] = []
    stop = threading.Event()
    instance = {"x": np.random.default_rng(0).normal(size=256).astype(np.float32)}
    with mindserve.Runtime() as rt:
        rt.add_listener(lambda e: e.kind == "unloaded" and e.version == 1 and unloaded.set())
        rt.start(svc, version=1)

        def caller() -> None:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    rt.infer("mlp", "predict", [instance])
                except BaseException as exc:  # counted: must stay empty
                    failures.append(exc)
                calls.append((start, time.monotonic() - start))

        threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        steady_rss = process.memory_info().rss
        peak = [steady_rss]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        swap_start = time.monotonic()
        rt.update("mlp", version=2)
        update_seconds = time.monotonic() - swap_start
        unloaded.wait(30)
        swap_end = time.monotonic()
        sampling.set()
        sampler.join()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
    steady = [lat for start, lat in calls if start < swap_start]
    during = [lat for start, lat in calls if swap_start <= start <= swap_end]
    return {
        "calls": len(calls),
        "failed": len(failures),
        "steady_p50": percentile(steady, 0.5),
        "steady_p99": percentile(steady, 0.99),
        "swap_p50": percentile(during, 0.5),
        "swap_p99": percentile(during, 0.99),
        "update_s": update_seconds,
        "steady_mb": steady_rss / 2**20,
        "peak_mb": peak[0] / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = export_versions(os.path.join(tmp, "mlp"))
        rounds = []
        for i in range(args.rounds):
            rounds.append(one_round(root, args.seconds))
            print(f"round {i + 1}/{args.rounds}: {rounds[-1]}", file=sys.stderr)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    print(
        f"\nhot update under load: {CALLERS} caller threads, MLP 256-1024-1024-10, medians of {args.rounds} rounds\n"
    )
    print("| figure | value |")
    print("| --- | ---: |")
    print(f"| calls per round | {med('calls'):,.0f} |")
    print(f"| failed calls (all rounds) | {sum(r['failed'] for r in rounds)} |")
    print(f"| p50 / p99 latency, steady state (ms) | {med('steady_p50'):.2f} / {med('steady_p99'):.2f} |")
    print(f"| p50 / p99 latency, during the swap (ms) | {med('swap_p50'):.2f} / {med('swap_p99'):.2f} |")
    print(f"| `update()` duration: load + warm-up of version 2 (s) | {med('update_s'):.2f} |")
    print(
        f"| resident memory, steady / peak during the swap (MB) | {med('steady_mb'):.0f} / {med('peak_mb'):.0f} |"
    )


if __name__ == "__main__":
    main()

"""How long an event loop stalls while `ainfer` calls run a slow per-instance stage.

    python bench/bench_loop_stall.py [--calls 10] [--stage-ms 50] [--rounds 5]

The servable decodes each instance in a per-instance stage that takes ``--stage-ms`` (a
sleep, as a decoder waiting on I/O or a C library would release the GIL) before a small
model. ``--calls`` concurrent ``ainfer`` calls run on one loop while a ticker coroutine
measures the loop's longest stall (the longest gap between two of its 1 ms ticks beyond
the tick itself); the same calls through ``infer_async`` give the time to compare. The
report gives medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _machine import describe

import mindserve


def servable(stage_seconds: float) -> mindserve.Servable:
    svc = mindserve.Servable("decode")
    model = svc.model(lambda x: x * 2, name="double")

    @svc.stage
    def decode(x):
        time.sleep(stage_seconds)
        return x

    svc.add_method(lambda x: model(decode(x)), name="f", outputs="y")
    return svc


async def ainfer_round(rt: mindserve.Runtime, calls: int) -> tuple[float, float]:
    """Seconds for ``calls`` concurrent ainfer calls, and the loop's longest stall."""
    stall = 0.0
    running = True

    async def ticker() -> None:
        nonlocal stall
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stall = max(stall, now - last - 0.001)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await asyncio.gather(*(rt.ainfer("decode", "f", [{"x": np.float32(k)}]) for k in range(calls)))
    elapsed = time.perf_counter() - started
    running = False
    await tick
    return elapsed, stall


def futures_round(rt: mindserve.Runtime, calls: int) -> float:
    started = time.perf_counter()
    futures = [rt.infer_async("decode", "f", [{"x": np.float32(k)}]) for k in range(calls)]
    for future in futures:
        future.result(60)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--stage-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(describe(), f"load average {os.getloadavg()[0]:.2f}")
    ainfer_s, stalls, futures_s = [], [], []
    with mindserve.Runtime(warm_up=False) as rt:
        rt.start(servable(args.stage_ms / 1000))
        for _ in range(args.rounds):
            elapsed, stall = asyncio.run(ainfer_round(rt, args.calls))
            ainfer_s.append(elapsed)
            stalls.append(stall)
            futures_s.append(futures_round(rt, args.calls))
    print(
        f"{args.calls} calls through a {args.stage_ms:g} ms per-instance stage, medians of {args.rounds} rounds:"
    )
    print(
        f"  ainfer:       {statistics.median(ainfer_s) * 1000:7.1f} ms, loop's longest stall {statistics.median(stalls) * 1000:.1f} ms (worst {max(stalls) * 1000:.1f} ms)"
    )
    print(f"  infer_async:  {statistics.median(futures_s) * 1000:7.1f} ms")
    print(f"  ainfer / infer_async time: {statistics.median(ainfer_s) / statistics.median(futures_s):.2f}x")


if __name__ == "__main__":
    main()

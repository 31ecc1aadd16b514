"""The RESTful app (mindserve.http.RestApp under uvicorn) side by side with calling the runtime
in-process, with the same concurrency.

    python bench/bench_http.py [--rounds 3] [--seconds 4]

Rows, each run ``--rounds`` times interleaved (the table shows medians across rounds, and
the ratio to ``in-process threads`` per round, then their median: the machine is shared
and noisy). The MLP (256-1024-1024-10, MindIR, CPU) serves one instance per call:

* ``in-process threads``: 64 threads calling ``Runtime.infer`` (bench_workers.py's caller).
* ``in-process ainfer``: 64 asyncio tasks awaiting ``Runtime.ainfer`` on one event loop,
  the path each HTTP request takes.
* ``http json`` / ``http b64``: 64 keep-alive connections POSTing
  ``{"instances": [{"x": ...}]}`` to uvicorn on 127.0.0.1 (a BackgroundServer in this
  process), the input as a JSON list of 256 floats, or as ``{"b64", "type", "shape"}``.
  The callers run in a second process (asyncio, raw HTTP/1.1: about as cheap as a
  client gets), which shares the machine's cores with the server.

Latency is per call (per request), p50 and p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _machine import describe  # noqa: E402
from bench_batching import export_mlp  # noqa: E402
from bench_workers import CALLERS, servable, threads_calling  # noqa: E402

import mindserve  # noqa: E402
from mindserve.http import BackgroundServer, RestApp  # noqa: E402

CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, re, sys, time
    port, callers, seconds, path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    body = open(path, "rb").read()
    head = (
        "POST /model/mlp:predict HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Type: application/json\\r\\n"
        f"Content-Length: {len(body)}\\r\\n\\r\\n"
    ).encode()
    length = re.compile(rb"content-length: *(\\d+)", re.I)

    async def caller(window, latencies, failures):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < window[1]:
            t = time.perf_counter()
            writer.write(head + body)
            headers = await reader.readuntil(b"\\r\\n\\r\\n")
            reply = await reader.readexactly(int(length.search(headers).group(1)))
            if window[0] <= t:
                latencies.append(time.perf_counter() - t)
                if not reply.startswith(b'{"instances":[{"logits":'):
                    failures.append(reply[:200])
        writer.close()

    async def main():
        warm_up = 1.0
        window = (time.perf_counter() + warm_up, time.perf_counter() + warm_up + seconds)
        latencies, failures = [], []
        await asyncio.gather(*(caller(window, latencies, failures) for _ in range(callers)))
        print(json.dumps({"latencies": latencies, "seconds": seconds, "failures": [f.decode() for f in failures[:3]]}))

    asyncio.run(main())
    """
)


def stats(latencies: list[float], seconds: float) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    return (
        len(ordered) / seconds,
        ordered[len(ordered) // 2] * 1e3,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    )


def tasks_calling(rt: mindserve.Runtime, seconds: float) -> tuple[float, float, float]:
    """64 asyncio tasks awaiting ``ainfer`` for ``seconds`` (after a second of warm-up)."""
    inputs = np.random.default_rng(1).normal(size=(CALLERS, 256)).astype(np.float32)

    async def run() -> list[float]:
        start = time.perf_counter() + 1.0
        end = start + seconds
        latencies: list[float] = []

        async def caller(k: int) -> None:
            instance = [{"x": inputs[k]}]
            while time.perf_counter() < end:
                t = time.perf_counter()
                await rt.ainfer("mlp", "predict", instance)
                if t >= start:
                    latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(caller(k) for k in range(CALLERS)))
        return latencies

    return stats(asyncio.run(run()), seconds)


def http_calling(port: int, body_path: str, seconds: float) -> tuple[float, float, float]:
    """64 connections from a second process, POSTing the body in ``body_path``."""
    out = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, str(port), str(CALLERS), str(seconds), body_path],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    if result["failures"]:
        raise RuntimeError(f"failed requests, for example: {result['failures']}")
    return stats(result["latencies"], result["seconds"])


def bodies(root: str) -> dict[str, str]:
    """The request bodies: the input as a JSON list and as b64, one file each."""
    x = np.random.default_rng(2).normal(size=256).astype(np.float32)
    forms = {
        "json": {"instances": [{"x": x.tolist()}]},
        "b64": {
            "instances": [
                {"x": {"b64": base64.b64encode(x.tobytes()).decode(), "type": "fp32", "shape": [256]}}
            ]
        },
    }
    paths = {}
    for name, body in forms.items():
        paths[name] = os.path.join(root, f"{name}.json")
        with open(paths[name], "w") as handle:
            json.dump(body, handle)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement")
    args = parser.parse_args()
    import uvicorn

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(describe())
    print(f"uvicorn {uvicorn.__version__} ({http}, {loop} loop); {CALLERS} callers; one instance per call")
    rows: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as root:
        directory = os.path.join(root, "mlp")
        export_mlp(directory)
        paths = bodies(root)
        with mindserve.Runtime() as rt:
            rt.start(servable(directory, heavy=False))
            with BackgroundServer(RestApp(rt)) as server:
                for round_ in range(args.rounds):
                    rows.setdefault("in-process threads", []).append(threads_calling(rt, "mlp", args.seconds))
                    rows.setdefault("in-process ainfer", []).append(tasks_calling(rt, args.seconds))
                    for form, path in paths.items():
                        rows.setdefault(f"http {form}", []).append(
                            http_calling(server.port, path, args.seconds)
                        )
                    print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    report(rows)


def report(rows: dict[str, list[tuple[float, float, float]]]) -> None:
    base = rows["in-process threads"]
    print(
        f"\n| {'row':<20} | {'instances/s':>11} | {'p50 ms':>7} | {'p99 ms':>7} | {'vs in-process threads':>21} |"
    )
    print(f"| {'-' * 20} | {'-' * 11}:| {'-' * 7}:| {'-' * 7}:| {'-' * 21}:|")
    for name, results in rows.items():
        throughput, p50, p99 = (statistics.median(r[i] for r in results) for i in range(3))
        ratio = statistics.median(r[0] / b[0] for r, b in zip(results, base))
        print(f"| {name:<20} | {throughput:>11.0f} | {p50:>7.2f} | {p99:>7.2f} | {ratio:>20.2f}x |")


if __name__ == "__main__":
    main()

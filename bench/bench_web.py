"""mindserve behind HTTP side by side with the peers a web developer would pick (issue 19).

    python bench/bench_web.py [--rounds 5] [--seconds 5]      # on an idle machine
    python bench/bench_web.py --smoke                          # 1 round of 1 s: it works
    python bench/bench_web.py --buckets 1,2,4,8,64             # and a row with those buckets

The MLP 256-1024-1024-10 (MindIR, CPU), one instance per request, behind uvicorn on
127.0.0.1 (httptools and uvloop when installed, access logs off, the same for every row),
each server in its own process, started once; 64 keep-alive connections from a
load-generator process (asyncio, raw HTTP/1.1); rounds interleaved (a round measures each
row once, in turn); every reply is checked against the network called directly
(MindSpore in this process): a wrong or failed reply fails the run.

* ``RestApp json`` / ``RestApp b64``: ``mindserve.http.RestApp`` (``POST /model/mlp:predict``),
  the input as a JSON list of 256 numbers or as ``{"b64", "type", "shape"}``;
* ``LitServe``: ``litserve.LitServer`` with its batching (``max_batch_size=64``,
  ``batch_timeout=0.002``), one inference worker; skipped when litserve is not installed
  (``pip install litserve``; it is not a dependency of mindserve or its tests);
* ``RestApp json, buckets`` (with ``--buckets 1,2,4,8,64``): the same app, its model fed only
  those batch sizes (``Batching(buckets=...)``; docs/benchmarks.md on MindSpore's dear batch
  sizes 16-48 on some CPUs);
* ``FastAPI batcher``: a FastAPI app with a hand-written asyncio batcher (``HandBatcher``
  below: about 60 lines, the network under a lock in one thread).

Reported per row, medians over rounds: requests/s, p50 and p99 latency (ms), and the server's
CPU time per request (us: its processes' user+system time over the run, all children
included, divided by the requests answered).
"""

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
import threading
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _machine import describe  # noqa: E402

CALLERS = 64
MAX_BATCH = 64
BATCH_TIMEOUT = 0.002
ROUTES = {"restapp": "/model/mlp:predict", "litserve": "/predict", "fastapi": "/predict"}
#: The batch sizes the RestApp server of ``--buckets`` feeds the model (its environment).
BUCKETS_VARIABLE = "MINDSERVE_BENCH_BUCKETS"


# -- the servers (each run as `python bench_web.py --serve <kind> <port> <directory>`) ---------------


def uvicorn_options() -> dict[str, Any]:
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return {"http": http, "loop": loop, "log_level": "warning", "access_log": False}


def load_network(directory: str) -> Any:
    """The MLP called directly: a function from a (n, 256) float32 array to (n, 10)."""
    import mindspore as ms
    from mindspore import nn

    cell = nn.GraphCell(ms.load(os.path.join(directory, "1", "mlp.mindir")))
    return lambda x: cell(ms.Tensor(x)).asnumpy()


def serve_restapp(port: int, directory: str) -> None:
    import uvicorn
    from bench_workers import servable

    import mindserve
    from mindserve.http import RestApp

    rt = mindserve.Runtime()
    buckets = os.environ.get(BUCKETS_VARIABLE)
    if buckets:  # the MLP as bench_workers defines it, fed only these batch sizes
        svc = mindserve.Servable("mlp", directory=directory)
        batching = mindserve.Batching(buckets=tuple(int(b) for b in buckets.split(",")))
        mlp = svc.model("mlp.mindir", batching=batching)
        svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
        rt.start(svc)
    else:
        rt.start(servable(directory, heavy=False))
    mindserve.freeze_gc()  # start-up objects out of the collector's walks (docs/running.md)
    uvicorn.run(RestApp(rt), host="127.0.0.1", port=port, **uvicorn_options())


class HandBatcher:
    """What a FastAPI user writes by hand: requests queue on the event loop; one task takes up
    to ``MAX_BATCH`` of them (waiting ``BATCH_TIMEOUT`` for more after the first), runs the
    network on a thread (under a lock: one batch at a time) and resolves their futures."""

    def __init__(self, network: Any) -> None:
        self.network = network
        self.lock = threading.Lock()
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] | None = None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.network(batch)  # type: ignore[no-any-return]

    async def predict(self, x: np.ndarray) -> np.ndarray:
        if self.queue is None:
            self.queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._loop())
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self.queue.put((x, future))
        return await future

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + BATCH_TIMEOUT
            while len(items) < MAX_BATCH:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            batch = np.stack([x for x, _ in items])
            try:
                outputs = await asyncio.to_thread(self._run, batch)
            except Exception as exc:
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), output in zip(items, outputs):
                if not future.done():
                    future.set_result(output)


def serve_fastapi(port: int, directory: str) -> None:
    import gc

    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    batcher = HandBatcher(load_network(directory))
    batcher.network(np.zeros((1, 256), np.float32))  # compiled before the first request
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = json.loads(await request.body())
        logits = await batcher.predict(np.asarray(body["x"], np.float32))
        return Response(json.dumps({"logits": logits.tolist()}), media_type="application/json")

    gc.collect()
    gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=port, **uvicorn_options())


try:  # LitServe's inference workers are spawned processes: its API class lives at module level
    import litserve as ls
except ImportError:
    ls = None

if ls is not None:

    class MLPAPI(ls.LitAPI):
        """The MLP as a LitServe API, batched by LitServe."""

        def __init__(self, directory: str) -> None:
            super().__init__(max_batch_size=MAX_BATCH, batch_timeout=BATCH_TIMEOUT)
            self.directory = directory

        def setup(self, device: str) -> None:
            self.network = load_network(self.directory)

        def decode_request(self, request: dict[str, Any]) -> np.ndarray:
            return np.asarray(request["x"], np.float32)

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.stack(inputs)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.network(x)  # type: ignore[no-any-return]

        def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
            return list(output)

        def encode_response(self, output: np.ndarray) -> dict[str, Any]:
            return {"logits": output.tolist()}


def serve_litserve(port: int, directory: str) -> None:
    server = ls.LitServer(MLPAPI(directory), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning", **_quiet())


def _quiet() -> dict[str, Any]:
    opts = uvicorn_options()
    return {"http": opts["http"], "loop": opts["loop"], "access_log": False}


SERVERS = {"restapp": serve_restapp, "fastapi": serve_fastapi, "litserve": serve_litserve}


# -- the load generator (a second process) -------------------------------------------------------------

CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, re, sys, time
    port, callers, seconds, path, route, kind, expected = sys.argv[1:8]
    port, callers, seconds = int(port), int(callers), float(seconds)
    body = open(path, "rb").read()
    expected = json.load(open(expected))
    head = (
        f"POST {route} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Type: application/json\\r\\n"
        f"Content-Length: {len(body)}\\r\\n\\r\\n"
    ).encode()
    length = re.compile(rb"content-length: *(\\d+)", re.I)

    def logits(reply):
        data = json.loads(reply)
        return data["instances"][0]["logits"] if kind == "restapp" else data["logits"]

    def wrong(reply):
        try:
            got = logits(reply)
        except Exception:
            return True
        return len(got) != len(expected) or any(abs(a - b) > 1e-4 + 1e-4 * abs(b) for a, b in zip(got, expected))

    async def caller(window, latencies, failures, count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < window[1]:
            t = time.perf_counter()
            writer.write(head + body)
            headers = await reader.readuntil(b"\\r\\n\\r\\n")
            reply = await reader.readexactly(int(length.search(headers).group(1)))
            count[0] += 1
            if not headers.startswith(b"HTTP/1.1 200") or wrong(reply):
                failures.append(reply[:200])
            if window[0] <= t:
                latencies.append(time.perf_counter() - t)
        writer.close()

    async def main():
        warm_up = min(1.0, seconds)
        window = (time.perf_counter() + warm_up, time.perf_counter() + warm_up + seconds)
        latencies, failures, count = [], [], [0]
        await asyncio.gather(*(caller(window, latencies, failures, count) for _ in range(callers)))
        print(json.dumps({"latencies": latencies, "seconds": seconds, "requests": count[0],
                          "failures": len(failures), "examples": [f.decode() for f in failures[:3]]}))

    asyncio.run(main())
    """
)


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process and all its living descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, stack = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        stack += children.get(current, [])
    return total


class Row:
    def __init__(self, name: str, server: subprocess.Popen[bytes], port: int, body: str, kind: str) -> None:
        self.name, self.server, self.port, self.body, self.kind = name, server, port, body, kind
        self.results: list[tuple[float, float, float, float]] = []

    def measure(self, seconds: float, expected: str) -> None:
        before = cpu_seconds(self.server.pid)
        command = [sys.executable, "-c", CLIENT_SCRIPT, str(self.port), str(CALLERS), str(seconds)]
        out = subprocess.run(  # (timeout: a hang guard; a measurement takes seconds + 1)
            [*command, self.body, ROUTES[self.kind], self.kind, expected],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 120,
        )
        cpu = cpu_seconds(self.server.pid) - before
        result = json.loads(out.stdout)
        if result["failures"]:
            raise RuntimeError(
                f"{self.name}: {result['failures']} wrong or failed replies: {result['examples']}"
            )
        ordered = sorted(result["latencies"])
        self.results.append(
            (
                len(ordered) / result["seconds"],
                ordered[len(ordered) // 2] * 1e3,
                ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
                cpu / result["requests"] * 1e6,
            )
        )


def start_server(
    kind: str, directory: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(  # its own process group: stopped with all its children
        [sys.executable, __file__, "--serve", kind, str(port), directory],
        start_new_session=True,
        env=None if env is None else {**os.environ, **env},
    )
    deadline = time.monotonic() + 300
    while True:  # until it accepts a connection
        if server.poll() is not None:
            raise RuntimeError(f"the {kind} server exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(server: "subprocess.Popen[bytes]") -> None:
    """Stop a server and every process it started."""
    import signal

    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone: the rest of its group too
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def bodies(root: str, x: np.ndarray) -> dict[str, str]:
    forms = {
        "restapp json": {"instances": [{"x": x.tolist()}]},
        "restapp b64": {
            "instances": [
                {"x": {"b64": base64.b64encode(x.tobytes()).decode(), "type": "fp32", "shape": [256]}}
            ]
        },
        "plain json": {"x": x.tolist()},
    }
    paths = {}
    for name, body in forms.items():
        paths[name] = os.path.join(root, name.replace(" ", "_") + ".json")
        with open(paths[name], "w") as handle:
            json.dump(body, handle)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--smoke", action="store_true", help="one round of one second: check that it runs")
    parser.add_argument(
        "--buckets",
        metavar="SIZES",
        help="also a RestApp JSON row whose model is fed only these batch sizes (e.g. 1,2,4,8,64)",
    )
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "DIRECTORY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, port, directory = args.serve
        SERVERS[kind](int(port), directory)
        return
    if args.smoke:
        args.rounds, args.seconds = 1, 1.0
    import uvicorn
    from bench_batching import export_mlp

    opts = uvicorn_options()
    print(describe())
    print(
        f"uvicorn {uvicorn.__version__} ({opts['http']}, {opts['loop']} loop); {CALLERS} connections; one instance per request"
    )
    with tempfile.TemporaryDirectory() as root:
        directory = os.path.join(root, "mlp")
        export_mlp(directory)
        x = np.random.default_rng(2).normal(size=256).astype(np.float32)
        expected = os.path.join(root, "expected.json")
        with open(expected, "w") as handle:
            json.dump(load_network(directory)(x[None])[0].tolist(), handle)
        paths = bodies(root, x)
        kinds = ["restapp", "fastapi"] + (["litserve"] if importlib.util.find_spec("litserve") else [])
        if "litserve" not in kinds:
            print("LitServe: not installed, skipped (pip install litserve)")
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for kind in kinds:
                servers[kind] = start_server(kind, directory)
            if args.buckets:
                servers["buckets"] = start_server("restapp", directory, {BUCKETS_VARIABLE: args.buckets})
            rows = run_rows(servers, paths, expected, args.rounds, args.seconds)
        finally:
            for server, _ in servers.values():
                stop(server)
    report(rows)


def run_rows(
    servers: dict[str, tuple[subprocess.Popen[bytes], int]],
    paths: dict[str, str],
    expected: str,
    rounds: int,
    seconds: float,
) -> list[Row]:
    rows = [
        Row("RestApp json", *servers["restapp"], paths["restapp json"], "restapp"),
        Row("RestApp b64", *servers["restapp"], paths["restapp b64"], "restapp"),
        Row("FastAPI batcher", *servers["fastapi"], paths["plain json"], "fastapi"),
    ]
    if "litserve" in servers:
        rows.append(Row("LitServe", *servers["litserve"], paths["plain json"], "litserve"))
    if "buckets" in servers:
        rows.insert(2, Row("RestApp json, buckets", *servers["buckets"], paths["restapp json"], "restapp"))
    for round_ in range(rounds):
        for row in rows:
            row.measure(seconds, expected)
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr)
    return rows


def report(rows: list[Row]) -> None:
    peers = [r for r in rows if not r.name.startswith("RestApp")]
    print(
        f"\n| {'row':<21} | {'requests/s':>10} | {'p50 ms':>7} | {'p99 ms':>7} | {'server CPU/request us':>21} | {'vs best peer':>12} |"
    )
    print(f"| {'-' * 21} | {'-' * 10}:| {'-' * 7}:| {'-' * 7}:| {'-' * 21}:| {'-' * 12}:|")
    for row in rows:
        rate, p50, p99, cpu = (statistics.median(r[i] for r in row.results) for i in range(4))
        # per round: this row over the best peer of the same round, then the median
        ratio = statistics.median(
            mine[0] / max(p.results[k][0] for p in peers) for k, mine in enumerate(row.results)
        )
        print(
            f"| {row.name:<21} | {rate:>10.0f} | {p50:>7.2f} | {p99:>7.2f} | {cpu:>21.0f} | {ratio:>11.2f}x |"
        )


if __name__ == "__main__":
    main()

"""mindserve on Ray Serve against a plain Ray Serve deployment with ``@serve.batch``, side by side.

    python bench/bench_ray.py [--rounds 3] [--seconds 4] [--no-update]

Model: the MLP 256-1024-1024-10 of bench_batching.py (MindIR, dynamic batch dimension, CPU).
A local Ray instance (``ray.init(num_cpus=2)``) runs one replica of each application:

* **mindserve**: ``mindserve.ray.application`` of the servable; callers use
  ``mindserve.ray.Client.ainfer``; the replica batches with mindserve's scheduler.
* **plain**: the deployment a Ray Serve user writes: the MindIR in ``nn.GraphCell``, a
  ``@serve.batch(max_batch_size=64)`` method (Ray's default wait of 10 ms) stacking the
  instances and running them; callers ``await handle.remote(x)``.

Both get ``max_ongoing_requests=256`` (Ray Serve's default of 5 would cap every batch at 5)
and no access log. 64 asyncio tasks in this process call with one instance each, for
``--seconds`` per run: through handles; through mindserve's Client with ``in_flight=64``
(every call its own Ray request, to show what grouping calls brings); and over HTTP through
Ray Serve's proxy (aiohttp, MindSpore Serving's JSON; the plain deployment parses the same
body). The runs are interleaved, ``--rounds`` times, after one warm-up run each; the table
shows medians across rounds. Then (unless ``--no-update``) a
version update under the same load: ``serve.run`` of the application at version 2 (a Ray
Serve rolling update) with Ray Serve's default ``max_surge_percent=0`` (the old replica
stops before the new one starts), then back to version 1 with ``max_surge_percent=100``
(the new replica starts first), counting failed calls and the latency while each ran.

The machine may be shared: compare the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
from ray import serve

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _machine import describe  # noqa: E402
from bench_batching import CALLERS, Result, export_mlp  # noqa: E402

import mindserve.ray  # noqa: E402

MAX_ONGOING = 256
NO_ACCESS_LOG = {"enable_access_log": False}
#: Half a CPU each: a rolling update with max_surge_percent=100 needs room for a second replica.
ACTOR = {"num_cpus": 0.5}


def mlp_servable(directory: str):
    """The factory each mindserve replica calls."""
    import mindserve

    svc = mindserve.Servable("mlp", directory=directory)
    mlp = svc.model("mlp.mindir")
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    return svc


class PlainMLP:
    """A plain Ray Serve deployment: the MindIR run by MindSpore, batched by @serve.batch."""

    def __init__(self, path: str) -> None:
        import mindspore as ms
        from mindspore import nn

        self.ms = ms
        self.net = nn.GraphCell(ms.load(path))

    async def __call__(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):  # a handle call
            return await self.predict(x)
        # An HTTP request through Ray Serve's proxy, in MindSpore Serving's JSON format as
        # the mindserve rows get it: {"instances": [{"x": [...]}]}.
        body = await x.json()
        logits = await self.predict(np.array(body["instances"][0]["x"], np.float32))
        return {"instances": [{"logits": logits.tolist()}]}

    @serve.batch(max_batch_size=64)
    async def predict(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.net(self.ms.Tensor(np.stack(xs))).asnumpy())


def deploy(root: str, path: str):
    """Run both applications; return the mindserve Client and the plain handle."""
    plain = serve.deployment(PlainMLP).options(
        name="plain", max_ongoing_requests=MAX_ONGOING, logging_config=NO_ACCESS_LOG, ray_actor_options=ACTOR
    )
    plain_handle = serve.run(plain.bind(path), name="plain", route_prefix="/plain")
    client = mindserve.ray.Client(
        serve.run(mindserve_app(root, version=1), name="mindserve", route_prefix="/ms")
    )
    return client, plain_handle


def mindserve_app(root: str, version: int, **options):
    return mindserve.ray.application(
        "bench_ray:mlp_servable",
        factory_args=(root,),
        version=version,
        max_ongoing_requests=MAX_ONGOING,
        logging_config=NO_ACCESS_LOG,
        ray_actor_options=ACTOR,
        **options,
    )


async def load(call, seconds: float, callers: int = CALLERS) -> tuple[int, float, list[float], int]:
    """``callers`` tasks calling ``call()`` in a loop for ``seconds``: (calls, elapsed,
    latencies, failures)."""
    latencies: list[float] = []
    failures = [0]
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                await call()
            except Exception:
                failures[0] += 1
                continue
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(latencies), time.perf_counter() - start, latencies, failures[0]


def mindserve_batches(client) -> tuple[int, int]:
    model = client.status().metrics.model("mlp", "mlp")
    return model.batches, model.instances


def run_mindserve(client, x, seconds: float) -> Result:
    batches0, instances0 = mindserve_batches(client)
    calls, elapsed, latencies, failures = asyncio.run(
        load(lambda: client.ainfer("predict", [{"x": x}]), seconds)
    )
    assert failures == 0, f"{failures} mindserve calls failed"
    batches1, instances1 = mindserve_batches(client)
    return Result(calls, elapsed, latencies, (instances1 - instances0) / max(1, batches1 - batches0))


def run_plain(handle, x, seconds: float) -> Result:
    async def call():
        return await handle.remote(x)

    calls, elapsed, latencies, failures = asyncio.run(load(call, seconds))
    assert failures == 0, f"{failures} plain calls failed"
    return Result(calls, elapsed, latencies, float("nan"))


async def http_load(url: str, x: np.ndarray, seconds: float) -> tuple[int, float, list[float], int]:
    """64 callers posting one instance each in MindSpore Serving's JSON format."""
    import aiohttp

    body = json.dumps({"instances": [{"x": x.tolist()}]})
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CALLERS)) as session:

        async def call() -> None:
            async with session.post(url, data=body, headers=headers) as reply:
                answer = await reply.json()
                if reply.status != 200 or "error_msg" in answer or "error_msg" in answer["instances"][0]:
                    raise RuntimeError(f"HTTP {reply.status}: {answer}")

        return await load(call, seconds)


def run_http(url: str, x: np.ndarray, seconds: float) -> Result:
    calls, elapsed, latencies, failures = asyncio.run(http_load(url, x, seconds))
    assert failures == 0, f"{failures} HTTP calls to {url} failed"
    return Result(calls, elapsed, latencies, float("nan"))


def update_under_load(client, root: str, x, seconds: float, version: int, surge: int) -> None:
    """A Ray Serve rolling update to ``version`` while 64 callers keep calling."""

    async def main():
        before = await load(lambda: client.ainfer("predict", [{"x": x}]), seconds)
        during: list[float] = []
        failures = [0]
        done = asyncio.Event()

        async def caller() -> None:
            while not done.is_set():
                t = time.perf_counter()
                try:
                    await client.ainfer("predict", [{"x": x}])
                except Exception:
                    failures[0] += 1
                    continue
                during.append(time.perf_counter() - t)

        callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
        t = time.perf_counter()
        app = mindserve_app(root, version=version, max_surge_percent=surge)
        await asyncio.to_thread(serve.run, app, name="mindserve", route_prefix="/ms")
        took = time.perf_counter() - t
        done.set()
        await asyncio.gather(*callers)
        return before, during, failures[0], took

    before, during, failures, took = asyncio.run(main())
    steady = Result(before[0], before[1], before[2], 0)
    updating = Result(len(during), took, during, 0)
    running = client.status().servable.default_version
    print(
        f"\nversion update by a Ray Serve rolling update (serve.run at version {version}, "
        f"max_surge_percent={surge}) under {CALLERS} callers:\n"
        f"- serve.run took {took:.1f} s; failed calls: {failures}; calls answered meanwhile: {len(during):,} "
        f"({updating.throughput:,.0f}/s, steady state {steady.throughput:,.0f}/s)\n"
        f"- latency p50/p99/max while updating: {updating.p50:.1f} / {updating.p99:.1f} / "
        f"{max(during) * 1e3:.0f} ms (steady state p50/p99: {steady.p50:.1f} / {steady.p99:.1f} ms)\n"
        f"- the replica now runs version {running}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of load per run")
    parser.add_argument("--no-update", action="store_true", help="skip the version update under load")
    parser.add_argument("--port", type=int, default=8765, help="Ray Serve's HTTP port (on 127.0.0.1)")
    args = parser.parse_args()

    import ray

    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "mlp")
        path = export_mlp(root)
        os.makedirs(os.path.join(root, "2"))
        shutil.copy(path, os.path.join(root, "2", "mlp.mindir"))
        src = os.path.join(os.path.dirname(HERE), "src")
        pythonpath = os.pathsep.join(p for p in (src, HERE, os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": args.port})
            client, plain = deploy(root, path)
            one_by_one = mindserve.ray.Client(client.handle, in_flight=CALLERS)
            base = f"http://127.0.0.1:{args.port}"
            x = np.random.default_rng(0).normal(size=256).astype(np.float32)
            measures = {
                "plain": lambda seconds: run_plain(plain, x, seconds),
                "mindserve": lambda seconds: run_mindserve(client, x, seconds),
                "mindserve_ungrouped": lambda seconds: run_mindserve(one_by_one, x, seconds),
                "plain_http": lambda seconds: run_http(f"{base}/plain", x, seconds),
                "mindserve_http": lambda seconds: run_http(f"{base}/ms/model/mlp:predict", x, seconds),
            }
            for measure in measures.values():  # warm-up: compiles, connections
                measure(1.0)
            runs: dict[str, list[Result]] = {name: [] for name in measures}
            for round_ in range(args.rounds):
                for name, measure in measures.items():
                    runs[name].append(measure(args.seconds))
                print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
            report(runs, args.rounds)
            if not args.no_update:
                update_under_load(client, root, x, args.seconds, version=2, surge=0)  # Ray Serve's default
                update_under_load(client, root, x, args.seconds, version=1, surge=100)
        finally:
            serve.shutdown()
            ray.shutdown()


def report(runs: dict[str, list[Result]], rounds: int) -> None:
    def med(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[name])

    def ratio(name: str, base: str) -> float:
        """The median across rounds of the throughput ratio within each round."""
        return statistics.median(m.throughput / p.throughput for m, p in zip(runs[name], runs[base]))

    rows = [
        ("plain", "plain Ray Serve, @serve.batch(max_batch_size=64), handle calls", "plain"),
        ("mindserve", "mindserve on Ray Serve, Client.ainfer (in_flight=8, the default)", "plain"),
        (
            "mindserve_ungrouped",
            "mindserve on Ray Serve, Client(in_flight=64): one request per call",
            "plain",
        ),
        ("plain_http", "plain Ray Serve over HTTP (JSON), @serve.batch", "plain_http"),
        ("mindserve_http", "mindserve on Ray Serve over HTTP (RestApp ingress)", "plain_http"),
    ]
    print(f"\nmedians of {rounds} rounds; {CALLERS} asyncio callers, one instance per call; 1 replica each\n")
    print("| configuration | instances/s | p50 ms | p99 ms | mean batch | vs plain |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, label, base in rows:
        batch = med(name, "mean_batch")
        shown = "–" if batch != batch else f"{batch:.1f}"
        print(
            f"| {label} | {med(name, 'throughput'):,.0f} | {med(name, 'p50'):.1f} | {med(name, 'p99'):.1f} | "
            f"{shown} | {ratio(name, base):.2f}x |"
        )
    print(
        f"\nmindserve / plain throughput through handles (within each round, median): "
        f"{ratio('mindserve', 'plain'):.2f}x (target >= 2x); over HTTP: {ratio('mindserve_http', 'plain_http'):.2f}x"
    )


if __name__ == "__main__":
    main()

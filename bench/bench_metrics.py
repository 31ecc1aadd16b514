"""What metrics cost: the MLP under 64 caller threads, with metrics on and off, side by side.

    python bench/bench_metrics.py [--rounds 5] [--seconds 60] [--plot docs/images/metrics.svg]

Each round runs both runtimes one after the other (alternating which goes first), each for
``--seconds`` with every caller calling until the end, and the
report gives the medians and the ratio on/off, of throughput and of this process's CPU time
per instance (which other processes on a shared machine disturb less than throughput), and
the collector's own cost per call and per batch, timed alone. ``--plot`` draws the latency and batch-size
histograms of the last round with metrics on, as an SVG (the picture in docs/metrics.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _machine import describe
from bench_batching import CALLERS, export_mlp, in_threads

import mindserve


def throughput(
    directory: str, metrics: bool, seconds: float
) -> tuple[float, float, mindserve.Metrics | None]:
    """Instances per second, CPU microseconds per instance, and the metrics when on."""
    svc = mindserve.Servable("mlp", directory=directory)
    mlp = svc.model("mlp.mindir", batching=mindserve.Batching(max_batch_size=64))
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    x = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    with mindserve.Runtime(metrics=metrics) as rt:
        rt.start(svc)
        in_threads(lambda: rt.infer("mlp", "predict", [{"x": x}]), CALLERS, 5)  # settle
        cpu = time.process_time()
        count, elapsed, _ = in_threads(lambda: rt.infer("mlp", "predict", [{"x": x}]), CALLERS, seconds)
        cpu = time.process_time() - cpu
        return count / elapsed, cpu / count * 1e6, rt.metrics() if metrics else None


def collector_cost(mean_batch: float) -> tuple[float, float]:
    """Microseconds the metrics spend counting one call and one batch, timed alone."""
    from mindserve._observe.metrics import MetricsCollector

    collector = MetricsCollector()
    method = collector.method_stats("mlp", 1, "predict")
    step = collector.step_stats(mindserve.Step("mlp", 1, "model", "mlp"))
    ok = ((mindserve.Outcome.OK, 1),)
    n = 200_000
    start = time.perf_counter()
    for _ in range(n):
        method.count(mindserve.Outcome.OK, ok, 0.004)
    per_call = (time.perf_counter() - start) / n * 1e6
    size = int(mean_batch)
    start = time.perf_counter()
    for _ in range(n):
        step.count(size, size, mindserve.BatchReason.FULL, 0.001, 0.003, 0, 0, 0.0, ())
    return per_call, (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="seconds each runtime runs per round (every caller calls until the end)",
    )
    parser.add_argument("--plot", help="write an SVG of the latency and batch-size histograms here")
    args = parser.parse_args()
    print(describe())
    runs: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    last = None
    with tempfile.TemporaryDirectory() as directory:
        export_mlp(directory)
        for n in range(args.rounds):
            for metrics in (True, False) if n % 2 else (False, True):
                rate, cpu, snapshot = throughput(directory, metrics, args.seconds)
                runs[metrics].append(rate)
                cpus[metrics].append(cpu)
                last = snapshot or last
            print(
                f"round {n + 1}: on {runs[True][-1]:.0f}/s {cpus[True][-1]:.0f} us CPU/instance, "
                f"off {runs[False][-1]:.0f}/s {cpus[False][-1]:.0f} us CPU/instance"
            )
    on, off = statistics.median(runs[True]), statistics.median(runs[False])
    ratios = [a / b for a, b in zip(runs[True], runs[False])]
    print(f"\n{CALLERS} callers, MLP, medians of {args.rounds} rounds:")
    print(f"  metrics on : {on:8.0f} instances/s")
    print(f"  metrics off: {off:8.0f} instances/s")
    print(f"  on/off     : {on / off:.3f} (median of per-round ratios {statistics.median(ratios):.3f})")
    cpu_ratios = [a / b for a, b in zip(cpus[True], cpus[False])]
    print(
        f"  CPU per instance: on {statistics.median(cpus[True]):.0f} us, off {statistics.median(cpus[False]):.0f} us, "
        f"on/off {statistics.median(cpu_ratios):.3f} (median of per-round ratios)"
    )
    mean_batch = last.model("mlp", "mlp").mean_batch_size if last is not None else 32.0
    per_call, per_batch = collector_cost(mean_batch)
    share = (per_call + per_batch / mean_batch) / statistics.median(cpus[False])
    print(
        f"  collector alone: {per_call:.2f} us per call, {per_batch:.2f} us per batch "
        f"(mean batch {mean_batch:.1f}): {share:.1%} of the CPU time per instance with metrics off"
    )
    if args.plot and last is not None:
        with open(args.plot, "w") as handle:
            handle.write(svg(last))
        print(f"wrote {args.plot}")


def svg(snapshot: mindserve.Metrics) -> str:
    """Two bar charts, Grafana-like: request latency and batch size."""
    method = snapshot.method("mlp", "predict")
    model = snapshot.model("mlp", "mlp")
    labels = [f"≤{b * 1e3:g}" for b in method.latency.bounds] + ["more"]
    counts = list(method.latency.counts)
    while len(counts) > 1 and counts[-1] == 0:  # trim empty slow buckets
        counts.pop(), labels.pop()
    first = next((i for i, c in enumerate(counts) if c), 0)
    latency = (labels[first:], counts[first:])
    bounds = [1]
    while bounds[-1] < max(model.batch_sizes, default=1):
        bounds.append(bounds[-1] * 2)
    sizes = (
        [str(b) if b < 4 else f"{b // 2 + 1}-{b}" for b in bounds],
        [sum(n for size, n in model.batch_sizes.items() if b // 2 < size <= b) for b in bounds],
    )
    width, height = 900, 330
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#181b1f"/>',
    ]
    p50, p99 = (method.latency.p50 or 0) * 1e3, (method.latency.p99 or 0) * 1e3
    parts += chart(20, f"request latency (ms), p50 {p50:.1f}, p99 {p99:.1f}", *latency, "#73bf69")
    parts += chart(470, f"batch sizes (mean {model.mean_batch_size:.1f})", *sizes, "#5794f2")
    reasons = ", ".join(
        f"{reason} {count}" for reason, count in sorted(model.reasons.items(), key=lambda r: -r[1])
    )
    parts.append(f'<text x="470" y="318" fill="#aaa">why batches ran: {reasons}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def chart(left: int, title: str, labels: list[str], counts: list[int], color: str) -> list[str]:
    top, plot_w, plot_h = 40, 410, 230
    peak = max(counts) or 1
    bar = plot_w / max(len(counts), 1)
    out = [f'<text x="{left}" y="22" fill="#d8d9da" font-size="12">{title}</text>']
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>'
    )
    for i, (label, count) in enumerate(zip(labels, counts)):
        h = plot_h * count / peak
        x = left + i * bar
        out.append(
            f'<rect x="{x + 2:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 4:.1f}" height="{h:.1f}" fill="{color}"/>'
        )
        out.append(
            f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 14}" fill="#aaa" text-anchor="middle">{label}</text>'
        )
        out.append(
            f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - h - 4:.1f}" fill="#ccc" text-anchor="middle">{count}</text>'
        )
    return out


if __name__ == "__main__":
    main()

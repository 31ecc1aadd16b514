"""Which CPUs each CPU worker process runs on.

MindSpore's CPU kernels run several times slower when their threads share cores with any
other busy thread, so each CPU worker is pinned to CPUs of its own (unless
``MINDSERVE_PIN_WORKERS=0``). The worker applies its set before MindSpore starts its
threads (:mod:`~mindserve._workers.child`).
"""

from __future__ import annotations

import os

#: Set to 0 to leave CPU workers wherever the OS puts them (see :func:`cpu_sets`).
PIN_VARIABLE = "MINDSERVE_PIN_WORKERS"


def worker_cpus(device_target: str | None, workers: int) -> list[tuple[int, ...] | None]:
    """The CPUs of each of ``workers`` worker processes on ``device_target`` (``None``:
    wherever the OS puts it; always so off the CPU, or when pinning is turned off)."""
    if _on_cpu(device_target) and os.environ.get(PIN_VARIABLE, "1").strip() != "0":
        return cpu_sets(workers)
    return [None] * workers


def cpu_sets(workers: int) -> list[tuple[int, ...] | None]:
    """The CPUs of each CPU worker process.

    MindSpore's CPU kernels run several times slower when their threads share cores with
    any other busy thread (this process's callers included); on a core of their own they
    keep their speed. So each worker gets its own CPUs, taken from those this process may
    use, leaving the first to this process when there are more CPUs than workers, and
    shared out in contiguous groups (round robin when there are more workers than CPUs).
    """
    if not hasattr(os, "sched_getaffinity"):
        return [None] * workers
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > workers:
        cpus = cpus[1:]
    if workers >= len(cpus):
        return [(cpus[k % len(cpus)],) for k in range(workers)]
    size, extra = divmod(len(cpus), workers)
    groups, start = [], 0
    for k in range(workers):
        end = start + size + (1 if k < extra else 0)
        groups.append(tuple(cpus[start:end]))
        start = end
    return groups  # type: ignore[return-value]


def _on_cpu(device_target: str | None) -> bool:
    from mindserve._execution.mindspore import ascend_present

    return device_target == "CPU" or (device_target is None and not ascend_present())

"""What the benchmarks ran on, for the top of their output."""

from __future__ import annotations

import os
import sys


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo ("unknown CPU" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def describe() -> str:
    return f"CPU: {cpu_model()}, {os.cpu_count()} cores; Python {sys.version.split()[0]}"

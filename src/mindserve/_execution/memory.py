"""Giving freed memory back to the system once a version's models unload.

Under load, glibc's allocator keeps the pages of freed objects in per-thread arenas; a model
freed while 64 threads allocate leaves them fragmented, and the process's resident memory
grows with every hot update (measured by bench/soak.py). ``malloc_trim`` returns the free
pages of every arena to the system.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Callable


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give the C allocator's free pages back to the system (a few milliseconds)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

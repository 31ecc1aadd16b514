"""Keeping glibc's allocator from growing the process with every hot update.

Under load, glibc's allocator keeps the pages of freed objects in per-thread arenas (up to 8
per core): a model loaded and freed while 64 threads allocate leaves them fragmented, and the
process's resident memory grows with every hot update (measured by bench/soak.py; loading and
freeing the same MindIR files with MindSpore alone, under the same threads, grows as much).
Two remedies, both measured there:

* ``malloc_trim`` once a version's models unload returns the free pages of every arena to
  the system (about half the growth);
* at most :data:`ARENA_MAX` arenas, set when MindSpore is first used in the process, halve
  what is left, at no measurable cost to throughput. A process that sets ``MALLOC_ARENA_MAX``
  (or glibc's ``glibc.malloc.arena_max`` tunable) itself keeps its own choice.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Mapping
from typing import Any

#: The malloc arenas a process serving MindSpore models uses, unless its environment says.
ARENA_MAX = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


@functools.cache
def _libc_function(name: str) -> Any:
    """A glibc function, or ``None`` where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give the C allocator's free pages back to the system (a few milliseconds)."""
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


def arena_limit(environ: Mapping[str, str]) -> int | None:
    """The arena limit to set: :data:`ARENA_MAX`, or ``None`` when the environment chose one."""
    if "MALLOC_ARENA_MAX" in environ or "glibc.malloc.arena_max" in environ.get("GLIBC_TUNABLES", ""):
        return None
    return ARENA_MAX


@functools.lru_cache(maxsize=1)
def limit_arenas() -> bool:
    """Cap glibc's malloc arenas (once per process); returns whether it did.

    glibc fixes its limit when the process first needs more than 8 arenas, so this is
    called before MindSpore's first model loads; threads that already have an arena keep it.
    """
    limit = arena_limit(os.environ)
    mallopt = _libc_function("mallopt")
    return limit is not None and mallopt is not None and bool(mallopt(_M_ARENA_MAX, limit))

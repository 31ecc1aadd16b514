"""glibc's malloc arenas are capped once MindSpore is first used, unless the environment chose."""

import os
import subprocess
import sys
import textwrap

import pytest

from mindserve._execution.memory import ARENA_MAX, _libc_function, arena_limit

pytestmark = pytest.mark.skipif(
    _libc_function("malloc_info") is None or _libc_function("mallopt") is None,
    reason="needs glibc's allocator",
)

# In a fresh process: optionally point mindserve at MindSpore's CPU (which caps the arenas),
# then let 16 threads each allocate while all are alive, and count glibc's arenas.
ARENAS_AFTER_THREADS = textwrap.dedent(
    """
    import ctypes, os, sys, tempfile, threading
    if sys.argv[1] == "mindspore":
        from mindserve._execution import mindspore
        mindspore.use_device("CPU", 0)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.fopen.restype = ctypes.c_void_p
    barrier = threading.Barrier(16)
    def allocate():
        block = libc.malloc(1 << 16)  # a thread's first allocation picks its arena
        barrier.wait()
        libc.free(ctypes.c_void_p(block))
    threads = [threading.Thread(target=allocate) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with tempfile.NamedTemporaryFile("r") as report:
        handle = libc.fopen(report.name.encode(), b"w")
        libc.malloc_info(0, ctypes.c_void_p(handle))
        libc.fclose(ctypes.c_void_p(handle))
        print(report.read().count("<heap nr="))
    """
)


def arenas_after_threads(mode, **environ):
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    env.update(environ)
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_AFTER_THREADS, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_arena_limit_follows_the_environment():
    assert arena_limit({}) == ARENA_MAX
    assert arena_limit({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}) == ARENA_MAX
    assert arena_limit({"MALLOC_ARENA_MAX": "8"}) is None
    assert arena_limit({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4"}) is None


def test_mindspore_use_caps_the_arenas_the_environment_left_alone():
    pytest.importorskip("mindspore")
    assert arenas_after_threads("plain") > 4  # glibc alone gives threads their own arenas
    assert arenas_after_threads("mindspore") <= ARENA_MAX
    assert arenas_after_threads("mindspore", MALLOC_ARENA_MAX="4") == 4  # the process's own choice

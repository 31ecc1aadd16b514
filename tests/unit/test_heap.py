"""mindserve.freeze_gc: start-up garbage freed, the rest left out of the collector's walks, and
nothing leaked when it is called again after an update."""

import gc
import sys
import threading
import weakref

import pytest

import mindserve


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # the rest of the test process walks everything again


def test_freeze_gc_frees_cycles_freezes_the_living_and_a_second_call_frees_what_died_since(unfrozen):
    dead = Node()
    dead_ref = weakref.ref(dead)
    del dead  # garbage in a cycle before the call: freed by it
    alive = Node()
    alive_ref = weakref.ref(alive)

    # No other thread runs between the call and the count (a frozen object another thread
    # frees by reference counting leaves the frozen generation): a long switch interval.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        frozen = mindserve.freeze_gc()
        count = gc.get_freeze_count()
    finally:
        sys.setswitchinterval(interval)

    assert dead_ref() is None
    assert frozen == count > 0
    del alive  # garbage now, but frozen: full collections leave it
    gc.collect()
    assert alive_ref() is not None
    mindserve.freeze_gc()  # after an update: what the last call froze is walked once more
    assert alive_ref() is None


def test_freeze_gc_still_collects_when_another_threads_collection_is_under_way(unfrozen):
    """Python skips gc.collect() while another thread collects: freeze_gc waits for its own."""
    started, release = threading.Event(), threading.Event()

    def hold(phase, info):
        if phase == "start" and threading.current_thread() is other:
            started.set()
            release.wait(10)

    other = threading.Thread(target=gc.collect)
    gc.callbacks.append(hold)
    try:
        other.start()
        assert started.wait(10)
        dead = Node()
        dead_ref = weakref.ref(dead)
        del dead
        threading.Timer(0.05, release.set).start()
        mindserve.freeze_gc()  # its first collection is skipped: the other one is under way
        assert dead_ref() is None
    finally:
        release.set()
        gc.callbacks.remove(hold)
        other.join(10)

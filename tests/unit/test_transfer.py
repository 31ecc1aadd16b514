"""Moving values to and from worker processes: pipes for messages, shared memory for arrays."""

from __future__ import annotations

import glob
import os
import threading
from multiprocessing.connection import Connection

import numpy as np
import pytest

import mindserve
from mindserve._config import WorkerPlan
from mindserve._workers import transfer
from mindserve._workers.pinning import cpu_sets
from mindserve._workers.transfer import PREFIX, SHM_DIR, Channel


@pytest.fixture
def channels():
    """A writer and a reader channel over one pipe, as the main process and a worker hold them."""
    read, write = os.pipe()
    prefix = f"{PREFIX}{os.getpid()}-test-{threading.get_ident()}-"
    writer = Channel(Connection(write, readable=False), prefix + "x")
    reader = Channel(Connection(read, writable=False), prefix + "x")
    yield writer, reader
    writer.drop()
    reader.drop()
    writer.connection.close()
    reader.connection.close()
    transfer.sweep(prefix)


def test_arrays_cross_through_shared_memory_and_the_pipe_carries_little(channels):
    writer, reader = channels
    arrays = (np.arange(100_000, dtype=np.float32).reshape(1000, 100), np.array([1, 2, 3], np.int64))
    sent = writer.send("model", ("mlp", arrays))
    assert sent >= arrays[0].nbytes + arrays[1].nbytes
    kind, (name, got) = reader.receive(copy=True)
    assert kind == "model" and name == "mlp"
    for a, b in zip(arrays, got):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert got[0].flags.writeable and got[0].base is not None  # a copy, owned by the receiver


def test_a_worker_reads_views_of_the_segment_valid_until_the_next_message(channels):
    writer, reader = channels
    writer.send("a", np.ones(10, np.float32))
    _, view = reader.receive(copy=False)
    kept = view.copy()
    assert not view.flags.owndata
    writer.send("b", np.full(10, 7, np.float32))  # same segment, same place
    _, second = reader.receive(copy=True)
    assert np.array_equal(second, np.full(10, 7))
    assert np.array_equal(view, np.full(10, 7))  # the view saw the segment reused
    assert np.array_equal(kept, np.ones(10))


def test_a_message_larger_than_the_segment_grows_it_and_removes_the_old_one(channels):
    writer, reader = channels
    writer.send("small", np.ones(10, np.uint8))
    reader.receive(copy=True)
    first = writer.segment.name
    big = np.arange(3 << 20, dtype=np.uint8)  # 3 MiB > the 1 MiB first segment
    writer.send("big", big)
    _, got = reader.receive(copy=True)
    assert np.array_equal(got, big)
    assert writer.segment.name != first and reader.segment.name == writer.segment.name
    assert not os.path.exists(os.path.join(SHM_DIR, first))


def test_messages_without_arrays_need_no_segment(channels):
    writer, reader = channels
    writer.send("stop", {"why": "done", "numbers": [1, 2]})
    assert reader.receive(copy=True) == ("stop", {"why": "done", "numbers": [1, 2]})
    assert writer.segment is None


def test_a_value_that_cannot_be_pickled_raises_before_anything_is_sent(channels):
    writer, reader = channels
    with pytest.raises(TypeError):
        writer.send("model", threading.Lock())
    writer.send("ok", 1)
    assert reader.receive(copy=True) == ("ok", 1)


def test_functions_from_main_or_closures_go_by_value():
    offset = 3
    data, _ = transfer.dumps(lambda x: x + offset)
    import pickle

    assert pickle.loads(data)(1) == 4


def test_segments_of_dead_main_processes_are_swept():
    dead = 2**22 + 12345  # beyond the default pid_max: no such process
    path = os.path.join(SHM_DIR, f"{transfer.owner_prefix(dead)}1-0-0-in-1")
    mine = os.path.join(SHM_DIR, f"{transfer.owner_prefix()}swept-test")
    # The same pid in another pid namespace (another container sharing /dev/shm): not judged.
    elsewhere = os.path.join(SHM_DIR, f"{PREFIX}{dead}-1-1-0-0-in-1")
    for p in (path, mine, elsewhere):
        open(p, "wb").close()
    try:
        assert transfer.sweep_orphans() >= 1
        assert not os.path.exists(path) and os.path.exists(mine) and os.path.exists(elsewhere)
    finally:
        for p in glob.glob(mine) + glob.glob(path) + glob.glob(elsewhere):
            os.unlink(p)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_cpu_sets_give_each_worker_cpus_of_its_own_when_there_are_enough(workers, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    sets = cpu_sets(workers)
    assert len(sets) == workers
    assert all(s for s in sets)
    if workers < 4:  # CPU 0 stays with the main process, the rest are shared out
        assert sorted(c for s in sets for c in s) == [1, 2, 3]
    else:
        assert {c for s in sets for c in s} == {0, 1, 2, 3}


def test_worker_plans():
    assert WorkerPlan.from_arguments(None, None, 0) is None
    assert WorkerPlan.from_arguments(0, None, 0) is None
    assert WorkerPlan.from_arguments(3, None, 2).device_ids == (2, 2, 2)
    assert WorkerPlan.from_arguments(None, [1, 0], 0).device_ids == (1, 0)
    assert WorkerPlan.from_arguments(2, (4, 5), 0).device_ids == (4, 5)
    assert WorkerPlan.from_arguments(None, 3, 0).device_ids == (3,)


def test_strided_arrays_go_through_shared_memory_too(channels):
    writer, reader = channels
    image = np.arange(20000 * 3, dtype=np.float32).reshape(20000, 3)[:, 1]  # a strided view
    message = transfer.prepare("stage", [(image, b"bytes", "text")])
    header, _, _, end = message
    assert len(header) < 1000 and end >= image.nbytes
    writer.write(message)
    _, [(got, blob, text)] = reader.receive(copy=True)
    assert np.array_equal(got, image) and (blob, text) == (b"bytes", "text")


# -- taken names, files of another account (issue 20, items 1 and 3) -------------------------


def test_a_taken_segment_name_is_skipped_and_left_alone(channels):
    """A name left by an earlier process with the same pid, or made by another account."""
    writer, reader = channels
    taken = os.path.join(SHM_DIR, writer.prefix + "-1")
    with open(taken, "wb") as handle:
        handle.write(b"not ours")
    try:
        writer.send("model", np.arange(10, dtype=np.float32))
        _, got = reader.receive(copy=True)
        np.testing.assert_array_equal(got, np.arange(10, dtype=np.float32))
        assert writer.segment.name != os.path.basename(taken)
        with open(taken, "rb") as handle:
            assert handle.read() == b"not ours", "a name it did not make is not touched"
    finally:
        os.unlink(taken)


def test_a_segment_that_cannot_be_created_is_a_worker_error(channels, monkeypatch):
    writer, _ = channels
    real_open = os.open

    def refused(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(transfer.os, "open", refused)
    with pytest.raises(
        mindserve.WorkerError, match=r"cannot create a shared-memory segment .*Permission denied"
    ):
        writer.send("model", np.arange(10, dtype=np.float32))


@pytest.fixture
def unremovable(tmp_path, monkeypatch):
    """A temporary directory standing in for /dev/shm, where the paths added to the returned
    set belong to another account: removing them raises PermissionError (as in /dev/shm,
    which is sticky: even root's chmod tricks do not stop root, so removal is what fails)."""
    monkeypatch.setattr(transfer, "SHM_DIR", str(tmp_path))
    theirs: set[str] = set()
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fspath(path) in theirs:
            raise PermissionError(1, "Operation not permitted", path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(transfer.os, "unlink", unlink)
    return tmp_path, theirs


def test_sweeping_skips_files_it_may_not_remove(unremovable):
    directory, theirs = unremovable
    prefix = transfer.owner_prefix() + "swept-"
    dead = 2**22 + 12345  # beyond the default pid_max: no such process
    names = [
        prefix + "mine",
        prefix + "theirs",
        transfer.owner_prefix(dead) + "theirs",
        transfer.owner_prefix(dead) + "x",
    ]
    for name in names:
        (directory / name).write_bytes(b"")
    theirs.update({str(directory / names[1]), str(directory / names[2])})
    assert transfer.sweep(prefix) == 1
    assert transfer.sweep_orphans() == 1
    assert sorted(p.name for p in directory.iterdir()) == sorted([names[1], names[2]])


class _NoRoom:
    """A reply channel whose shared memory has no room: a message with array data raises the
    "no room" WorkerError, one without goes through (recorded)."""

    def __init__(self):
        self.sent = []

    def write(self, message):
        import pickle

        header, raws, _, _ = message
        if raws:
            raise mindserve.WorkerError(
                "shared memory has no room for 32 MiB in /dev/shm (No space left on device)"
            )
        _, data, _, _ = pickle.loads(header)
        self.sent.append(pickle.loads(data))


@pytest.mark.parametrize(
    "result",
    [[np.ones(8, np.float32), np.ones(8, np.float32)], (np.ones(8, np.float32),)],
    ids=["a batched stage's outcomes", "a model's outputs"],
)
def test_a_result_with_no_room_in_shared_memory_fails_the_command_not_the_worker(result):
    """Issue 20, item 5: a stage's result used to be sent again, uncaught: the worker died."""
    from mindserve._workers.child import Worker, _Collect
    from mindserve._workers.protocol import Raised

    replies = _NoRoom()
    Worker(None, replies, None, _Collect())._reply(result, False, 0.1)
    (reply,) = replies.sent
    assert isinstance(reply, Raised) and isinstance(reply.error, mindserve.WorkerError)
    assert "shared memory has no room" in str(reply.error)

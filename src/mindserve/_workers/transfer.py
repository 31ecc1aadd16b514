"""Moving values between the main process and a worker: small messages over a pipe, array
data through shared memory.

A message is pickled with protocol 5: every contiguous numpy array in it goes out of band
(``buffer_callback``), its bytes are copied into a shared-memory :class:`Segment`, and only
the small pickle and the buffers' offsets cross the pipe. The receiver rebuilds the message
over views of the segment (a worker: no copy) or over copies of them (the main process:
results are copied out before the segment is written again).

Segments are files in ``/dev/shm`` (a RAM file system on Linux; elsewhere the temporary
directory) named ``mindserve-<pid>-...``, ``pid`` being the main process's, so that what a
dead process left behind can be found and removed (:func:`sweep`).
"""

from __future__ import annotations

import glob
import mmap
import os
import pickle
import tempfile
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

#: Where segments live: a RAM file system when there is one.
SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()

#: Every segment's name starts with this, then the main process's pid.
PREFIX = "mindserve-"

#: Buffers start at multiples of this (what numpy and SIMD kernels like).
_ALIGN = 64

#: The smallest segment made; segments grow to the next power of two that fits.
_MIN_SIZE = 1 << 20


class Segment:
    """One shared-memory area, mapped in this process."""

    def __init__(self, name: str, size: int = 0, *, create: bool = False) -> None:
        self.name = name
        self.path = os.path.join(SHM_DIR, name)
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
            self.size = size
            self.map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            if create:
                self.unlink()
            raise
        os.close(fd)

    def __repr__(self) -> str:
        return f"<Segment {self.name} {self.size} bytes>"

    def unlink(self) -> None:
        """Remove the name (mappings stay valid until closed)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with it
            pass


def segment_size(needed: int) -> int:
    """A segment size that fits ``needed`` bytes: a power of two, at least 1 MiB."""
    size = _MIN_SIZE
    while size < needed:
        size <<= 1
    return size


def sweep(prefix: str) -> int:
    """Remove every segment whose name starts with ``prefix``; return how many."""
    removed = 0
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*")):
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def sweep_orphans() -> int:
    """Remove segments left by main processes that no longer exist (killed with SIGKILL
    together with their workers); return how many."""
    removed = 0
    for path in glob.glob(os.path.join(SHM_DIR, PREFIX + "*")):
        pid_text = os.path.basename(path)[len(PREFIX) :].split("-", 1)[0]
        if pid_text.isascii() and pid_text.isdigit() and not _alive(int(pid_text)):
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def dumps(value: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``value`` with its arrays' data out of band; cloudpickle what pickle cannot
    (functions and classes defined in ``__main__`` or a notebook)."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception:
        import cloudpickle

        buffers = []
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return data, buffers


class Channel:
    """One direction of messages to or from a worker: a pipe for the message, a segment
    for the data. Only one message is in flight on a channel at a time.

    The writer owns the segment's growth: when a message does not fit, it makes a larger
    segment (named ``<prefix>-<n>``), removes the old name, and the message carries the
    new name to the reader, which maps it.
    """

    def __init__(self, connection: Connection, prefix: str, segment: Segment | None = None) -> None:
        self.connection = connection
        self.prefix = prefix
        self.segment = segment
        self._generation = 0

    def send(self, kind: str, value: Any) -> int:
        """Send ``value``; return the bytes of array data that went through shared memory.

        Raises what pickling raises when ``value`` cannot be sent; nothing is sent then."""
        data, buffers = dumps(value)
        layout: list[tuple[int, int]] = []
        end = 0
        raws = []
        for buffer in buffers:
            raw = buffer.raw()
            start = -(-end // _ALIGN) * _ALIGN
            layout.append((start, raw.nbytes))
            raws.append(raw)
            end = start + raw.nbytes
        renamed = None
        if raws and (self.segment is None or self.segment.size < end):
            renamed = self._grow(end)
        segment = self.segment
        for (start, size), raw in zip(layout, raws):
            segment.map[start : start + size] = raw  # type: ignore[union-attr]
        self.connection.send_bytes(pickle.dumps((kind, data, layout, renamed), protocol=5))
        return end

    def receive(self, *, copy: bool) -> tuple[str, Any]:
        """Wait for the next message; ``copy``: its arrays own their data (else they are
        views of the segment, valid until the next message). Raises ``EOFError`` when the
        other side has gone."""
        kind, data, layout, renamed = pickle.loads(self.connection.recv_bytes())
        if renamed is not None:
            self._adopt(renamed)
        if not layout:
            return kind, pickle.loads(data)
        view = memoryview(self.segment.map)  # type: ignore[union-attr]
        try:
            if copy:
                buffers: Sequence[Any] = [bytearray(view[start : start + size]) for start, size in layout]
            else:
                buffers = [view[start : start + size] for start, size in layout]
            return kind, pickle.loads(data, buffers=buffers)
        finally:
            if copy:
                view.release()

    def _grow(self, needed: int) -> str:
        self._generation += 1
        fresh = Segment(f"{self.prefix}-{self._generation}", segment_size(needed), create=True)
        self.drop()
        self.segment = fresh
        return fresh.name

    def _adopt(self, name: str) -> None:
        old = self.segment
        self.segment = Segment(name)
        if old is not None:
            old.close()

    def drop(self) -> None:
        """Remove and unmap this channel's segment."""
        if self.segment is not None:
            self.segment.unlink()
            self.segment.close()
            self.segment = None

"""Moving values between the main process and a worker: small messages over a pipe, array
data through shared memory.

A message is pickled with protocol 5: every contiguous numpy array in it goes out of band
(``buffer_callback``), its bytes are copied into a shared-memory :class:`Segment`, and only
the small pickle and the buffers' offsets cross the pipe. The receiver rebuilds the message
over views of the segment (a worker: no copy) or over copies of them (the main process:
results are copied out before the segment is written again).

Segments are files in ``/dev/shm`` (a RAM file system on Linux; elsewhere the temporary
directory) named ``mindserve-<pid>-<namespace>-<random>-...``, ``pid`` being the main
process's and ``namespace`` its pid namespace, so that what a dead process left behind can be
found and removed (:func:`sweep_orphans`); the random part (:func:`unpredictable`) keeps
another account, or an earlier process that had the same pid, from holding a name before it
is made. A name that is taken anyway is skipped, never opened or removed; a file this
process may not remove (another account's) is left where it is.
"""

from __future__ import annotations

import errno
import glob
import io
import mmap
import os
import pickle
import secrets
import tempfile
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Callable

import numpy as np

from mindserve._errors import WorkerError

#: Where segments live: a RAM file system when there is one.
SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()

#: Every segment's name starts with this, then the main process's pid and pid namespace.
PREFIX = "mindserve-"


def _pid_namespace() -> str:
    """This process's pid namespace (containers sharing a /dev/shm each have their own)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


NAMESPACE = _pid_namespace()


def owner_prefix(pid: int | None = None) -> str:
    """The start of the names of the segments a main process owns."""
    return f"{PREFIX}{os.getpid() if pid is None else pid}-{NAMESPACE}-"


def unpredictable() -> str:
    """A random part for segment names: 16 hex digits no other process can guess."""
    return secrets.token_hex(8)


#: A writer skips at most this many taken names in a row before it gives up.
_TAKEN_NAMES = 16

#: Buffers start at multiples of this (what numpy and SIMD kernels like).
_ALIGN = 64

#: The smallest segment made; segments grow to the next power of two that fits.
_MIN_SIZE = 1 << 20

#: A segment shrinks after this many messages in a row that fit in a quarter of it.
_SHRINK_AFTER = 3


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
                _reserve(fd, size, self.path)
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
        _unlink(self.path)

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with it
            pass


def _reserve(fd: int, size: int, path: str) -> None:
    """Make sure the file system has room for the whole segment now: a RAM file system
    (``/dev/shm``) reserves nothing for a sparse file, and writing past its room later
    kills the process with SIGBUS instead of raising."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system that cannot say
            return
        raise WorkerError(
            f"shared memory has no room for {size / 2**20:.0f} MiB in {os.path.dirname(path)} "
            f"({exc.strerror}). Hint: enlarge it (docker run --shm-size=1g, or a larger tmpfs), "
            f"or send smaller batches (Batching(max_batch_size=...))."
        ) from None


def segment_size(needed: int) -> int:
    """A segment size that fits ``needed`` bytes: a power of two, at least 1 MiB."""
    size = _MIN_SIZE
    while size < needed:
        size <<= 1
    return size


def sweep(prefix: str) -> int:
    """Remove every segment whose name starts with ``prefix``; return how many."""
    return sum(_unlink(path) for path in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*")))


def sweep_orphans() -> int:
    """Remove segments left by main processes that no longer exist (killed with SIGKILL
    together with their workers); return how many."""
    removed = 0
    for path in glob.glob(os.path.join(SHM_DIR, PREFIX + "*")):
        fields = os.path.basename(path)[len(PREFIX) :].split("-")
        if len(fields) < 2 or fields[1] != NAMESPACE:  # another pid namespace: not ours to judge
            continue
        if fields[0].isascii() and fields[0].isdigit() and not _alive(int(fields[0])):
            removed += _unlink(path)
    return removed


def _unlink(path: str) -> bool:
    """Remove a file; whether it was removed. A file already gone, or one this process may
    not remove (another account's, in a sticky ``/dev/shm``), is left as it is: cleaning up
    never fails a start or a close."""
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _out_of_band(obj: Any) -> Any:
    """How to pickle ``obj`` so that its data goes out of band, or ``NotImplemented``: a
    numpy array that is not contiguous is made contiguous (numpy pickles only contiguous
    arrays out of band). (``bytes`` and ``str`` values go through the pipe: pickle gives no
    hook for them.)"""
    if type(obj) is np.ndarray and not obj.flags.c_contiguous and not obj.flags.f_contiguous:
        if not obj.dtype.hasobject:
            return np.ascontiguousarray(obj).__reduce_ex__(5)
    return NotImplemented


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        return _out_of_band(obj)


def dumps(value: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``value`` with its arrays' data out of band; cloudpickle what pickle cannot
    (functions and classes defined in ``__main__`` or a notebook)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    try:
        _Pickler(stream, protocol=5, buffer_callback=buffers.append).dump(value)
        return stream.getvalue(), buffers
    except Exception:
        buffers = []
        return cloudpickle_dumps(value, buffers.append), buffers


_cloud_pickler: type[pickle.Pickler] | None = None


def cloudpickle_dumps(
    value: Any, buffer_callback: Callable[[pickle.PickleBuffer], object] | None = None
) -> bytes:
    """cloudpickle ``value`` (what is defined in ``__main__``, a notebook cell or a test
    function travels by value), with strided arrays made contiguous (out of band with a
    ``buffer_callback``) and MindSpore primitives, which do not pickle, rebuilt from the
    arguments they were made with (for ``nn.Cell`` models)."""
    global _cloud_pickler
    if _cloud_pickler is None:
        import cloudpickle  # only when workers are asked for: import mindserve stays light

        from mindserve._execution.mindspore import primitive_reducer

        class CloudPickler(cloudpickle.CloudPickler):  # type: ignore[misc]
            def reducer_override(self, obj: Any) -> Any:
                reduced = _out_of_band(obj)
                if reduced is NotImplemented:
                    reduced = primitive_reducer(obj)
                if reduced is None or reduced is NotImplemented:
                    return super().reducer_override(obj)
                return reduced

        _cloud_pickler = CloudPickler
    stream = io.BytesIO()
    _cloud_pickler(stream, protocol=5, buffer_callback=buffer_callback).dump(value)
    return stream.getvalue()


#: A message ready to send: its pickled header, its arrays' buffers, where each goes in
#: the segment, and the bytes they need.
Message = tuple[bytes, list[Any], list[tuple[int, int]], int]


def prepare(kind: str, value: Any, *, lend: bool = False) -> Message:
    """Pickle a message once (raising what pickling raises), to write to any channel.

    ``lend``: the reader may run on views of the segment (valid until the next message)
    instead of copies; only for readers that keep nothing, such as MindSpore networks."""
    data, buffers = dumps(value)
    layout: list[tuple[int, int]] = []
    raws = []
    end = 0
    for buffer in buffers:
        raw = buffer.raw()
        start = -(-end // _ALIGN) * _ALIGN
        layout.append((start, raw.nbytes))
        raws.append(raw)
        end = start + raw.nbytes
    header = pickle.dumps((kind, data, layout, lend), protocol=5)
    return header, raws, layout, end


class Channel:
    """One direction of messages to or from a worker: a pipe for the message, a segment
    for the data. Only one message is in flight on a channel at a time.

    The writer owns the segment's size: when a message does not fit, it makes a larger
    segment (named ``<prefix>-<n>``), removes the old name, and the message carries the
    new name to the reader, which maps it. After a few messages that would fit in a
    quarter of it, it makes a smaller one, so that one huge batch does not hold its memory
    for ever.
    """

    def __init__(self, connection: Connection, prefix: str, segment: Segment | None = None) -> None:
        self.connection = connection
        self.prefix = prefix
        self.segment = segment
        self._generation = 0
        self._small = 0  # messages in a row that would fit in a quarter of the segment

    def send(self, kind: str, value: Any, *, lend: bool = False) -> int:
        """Send ``value`` (see :func:`prepare`); return the bytes of array data that went
        through shared memory."""
        return self.write(prepare(kind, value, lend=lend))

    def write(self, message: Message) -> int:
        """Copy a prepared message's arrays into the segment and send it. Raises
        :class:`WorkerError` when shared memory has no room; ``OSError`` when the pipe is
        broken."""
        header, raws, layout, end = message
        renamed = self._fit(end) if raws else None
        segment = self.segment
        for (start, size), raw in zip(layout, raws):
            segment.map[start : start + size] = raw  # type: ignore[union-attr]
        self.connection.send_bytes(pickle.dumps((header, renamed), protocol=5))
        return end

    def read(self) -> bytes:
        """Wait for the next message, undecoded. Raises ``EOFError`` or ``OSError`` when
        the other side has gone."""
        return self.connection.recv_bytes()

    def decode(self, raw: bytes, *, copy: bool | None = None) -> tuple[str, Any]:
        """A message read by :meth:`read`. ``copy``: its arrays own their data (``None``:
        unless the writer lent the segment). Raises what unpickling raises."""
        header, renamed = pickle.loads(raw)
        if renamed is not None:
            self._adopt(renamed)
        kind, data, layout, lend = pickle.loads(header)
        if not layout:
            return kind, pickle.loads(data)
        if copy is None:
            copy = not lend
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

    def receive(self, *, copy: bool | None = None) -> tuple[str, Any]:
        """:meth:`read`, then :meth:`decode`."""
        return self.decode(self.read(), copy=copy)

    def _fit(self, needed: int) -> str | None:
        """Make the segment fit ``needed`` bytes (growing, or shrinking after a while);
        the new segment's name, or ``None`` when it stays."""
        segment = self.segment
        if segment is not None and segment.size >= needed:
            if segment.size <= _MIN_SIZE or segment.size < 4 * segment_size(needed):
                self._small = 0
                return None
            self._small += 1
            if self._small < _SHRINK_AFTER:
                return None
        self._small = 0
        fresh = self._create(segment_size(needed))
        self.drop()
        self.segment = fresh
        return fresh.name

    def _create(self, size: int) -> Segment:
        """A new segment of ``size`` bytes under the next free name. Raises
        :class:`WorkerError` when none can be made (no room, or the file system refuses)."""
        for _ in range(_TAKEN_NAMES):
            self._generation += 1
            name = f"{self.prefix}-{self._generation}"
            try:
                return Segment(name, size, create=True)
            except FileExistsError:  # not ours: skipped, left alone
                continue
            except OSError as exc:
                raise WorkerError(
                    f"cannot create a shared-memory segment in {SHM_DIR}: {type(exc).__name__}: "
                    f"{exc.strerror or exc}"
                ) from None
        raise WorkerError(
            f"cannot create a shared-memory segment in {SHM_DIR}: {_TAKEN_NAMES} names in a row "
            f"({self.prefix}-...) are taken by files this process did not make"
        )

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

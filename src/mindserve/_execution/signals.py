"""Keeping Python's Ctrl-C handling while MindSpore runs graphs.

MindSpore installs C-level ``SIGINT`` handlers of its own whenever it runs a graph: the
thread that runs it does at every run, and the threads of its actor pool do as they start
(measured on MindSpore 2.10: ``RegisterGlobalSignalHandler`` in ``GraphScheduler::Run``,
``SignalGuard::RegisterHandlers`` on each new pool thread). From then on a Ctrl-C, or a
Jupyter kernel's "interrupt", ends the process (status 143) instead of raising
``KeyboardInterrupt`` in the main thread. MindSpore has no switch for it.

Python's :func:`signal.signal` works only in the main thread, but the process-wide
``sigaction`` can be written from any thread. So mindserve keeps what Python wants for
``SIGINT`` after every MindSpore call (:func:`keep_python_sigint`): Python's own handler
when a Python handler is set (the default), or ``SIG_IGN`` / ``SIG_DFL`` when the program
chose those. Pool threads that start during a run may register after the run returns, so
for a few seconds after a run that may have started threads, a timer thread puts Python's
handling back every 10 ms (:func:`settle`).

Python's C handler is captured as opaque bytes (``struct sigaction`` is never interpreted,
so the C library's layout does not matter). Where there is no ``sigaction`` (not a POSIX C
library), all of this does nothing.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from typing import Any

#: Bytes enough for any C library's ``struct sigaction`` (glibc and musl: 152 on x86-64).
_ACTION_SIZE = 512
#: For how many seconds after a run that may have started MindSpore threads, and how often,
#: Python's handling is put back again.
_SETTLE_FOR = 3.0
_SETTLE_EVERY = 0.01

_SIGINT = int(signal.SIGINT)

try:  # signal.getsignal wraps this one, and costs 1-2 us more per call turning it into an enum
    from _signal import getsignal as _getsignal
except ImportError:  # not CPython
    _getsignal = signal.getsignal


def _libc() -> Any:
    try:
        # PyDLL keeps the GIL through the call: a sigaction is a quick system call, and
        # giving the GIL up after every graph run would hand it to another thread just as
        # the thread that ran the model needs it back.
        libc = ctypes.PyDLL(None, use_errno=True)
        libc.sigaction.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        libc.sigaction.restype = ctypes.c_int
    except (OSError, AttributeError):  # no C library with sigaction (Windows)
        return None
    return libc


_libc_handle = _libc()
_sigaction: Any = None if _libc_handle is None else _libc_handle.sigaction
_python_action: Any = None
_capture_lock = threading.Lock()
_settler: threading.Thread | None = None
_settle_wanted = threading.Event()


def _read() -> Any:
    action = ctypes.create_string_buffer(_ACTION_SIZE)
    return action if _sigaction(_SIGINT, None, action) == 0 else None


def _make_action(handler: int) -> Any:
    """A ``struct sigaction`` for ``SIG_DFL`` (0) or ``SIG_IGN`` (1): all zero but the handler,
    which is the structure's first field in every C library."""
    action = ctypes.create_string_buffer(_ACTION_SIZE)
    ctypes.c_void_p.from_buffer(action).value = handler
    return action


def capture_python_sigint() -> None:
    """Remember Python's own C-level ``SIGINT`` action, before MindSpore runs anything.

    In the main thread, Python's handler is installed afresh first (so an action some earlier
    MindSpore run left is not taken for Python's); elsewhere the current action is taken when
    Python has a handler set. Called under MindSpore's lock before a model loads.
    """
    global _python_action
    if _sigaction is None or _python_action is not None:
        return
    with _capture_lock:
        if _python_action is not None:
            return
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            return  # SIG_IGN, SIG_DFL or not Python's: nothing of Python's to keep yet
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)
        _python_action = _read()
        if _python_action is not None:
            _addresses["python"] = ctypes.addressof(_python_action)


#: SIG_IGN's and SIG_DFL's actions (kept alive here: only their addresses are passed).
_FIXED = {} if _sigaction is None else {"ignore": _make_action(1), "default": _make_action(0)}
#: The actions' addresses, passed as integers (the quickest call through ctypes).
_addresses: dict[str, int] = {name: ctypes.addressof(action) for name, action in _FIXED.items()}


def keep_python_sigint() -> None:
    """Put back what Python wants for ``SIGINT`` (after a MindSpore call: 1-5 us)."""
    if _sigaction is None:
        return
    handler = _getsignal(_SIGINT)
    while handler is not None:  # None: a handler Python did not install, not ours to touch
        if callable(handler):
            wanted = _addresses.get("python")
        elif handler == signal.SIG_IGN:
            wanted = _addresses.get("ignore")
        else:
            wanted = _addresses.get("default")
        if wanted is not None:
            _sigaction(_SIGINT, wanted, None)
        now = _getsignal(_SIGINT)
        if now is handler:
            return
        handler = now  # the main thread chose another handler between the two reads


def settle() -> None:
    """Restore Python's handling again a few times over the next seconds (a run may have
    started MindSpore threads that register their handler after it returns)."""
    global _settler
    if _sigaction is None:
        return
    with _capture_lock:
        _settle_wanted.set()
        if _settler is None or not _settler.is_alive():
            _settler = threading.Thread(target=_settle_loop, name="mindserve:sigint", daemon=True)
            _settler.start()


def _settle_loop() -> None:
    while True:
        with _capture_lock:
            if not _settle_wanted.is_set():
                return
            _settle_wanted.clear()
        for _ in range(int(_SETTLE_FOR / _SETTLE_EVERY)):
            if _settle_wanted.wait(_SETTLE_EVERY):
                break  # settle() again: start over
            keep_python_sigint()

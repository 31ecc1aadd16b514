"""Python's SIGINT handling put back after MindSpore replaced it (mindserve._execution.signals)."""

import ctypes
import os
import signal
import time

import pytest

from mindserve._execution import signals


def _install_c_default():
    """What MindSpore does at a graph run, in short: a C-level SIGINT action Python did not set."""
    libc = ctypes.CDLL(None)
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal(signal.SIGINT, None)  # SIG_DFL: a SIGINT would now end the process


@pytest.mark.skipif(os.name != "posix", reason="sigaction is POSIX")
def test_a_replaced_c_handler_is_put_back_so_ctrl_c_is_a_keyboard_interrupt():
    signals.capture_python_sigint()
    _install_c_default()
    signals.keep_python_sigint()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises between bytecodes


@pytest.mark.skipif(os.name != "posix", reason="sigaction is POSIX")
def test_a_program_that_ignores_sigint_keeps_ignoring_it():
    signals.capture_python_sigint()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _install_c_default()
        signals.keep_python_sigint()
        action = ctypes.create_string_buffer(512)
        signals._sigaction(signal.SIGINT, None, action)
        assert ctypes.c_void_p.from_buffer(action).value == 1  # SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)

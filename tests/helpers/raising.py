"""Exceptions of every kind for fault tests, and how a mindserve error must show them."""

import numpy as np


class Unprintable(Exception):
    """An exception whose ``str()`` and ``repr()`` raise."""

    def __str__(self):
        raise RuntimeError("str() of Unprintable")

    def __repr__(self):
        raise RuntimeError("repr() of Unprintable")


class CustomBase(BaseException):
    """A user's own ``BaseException``, outside ``Exception``."""


class UnprintableBase(CustomBase):
    def __str__(self):
        raise RuntimeError("str() of UnprintableBase")

    def __repr__(self):
        raise RuntimeError("repr() of UnprintableBase")


EXCEPTIONS = [
    ValueError("bad value -1"),
    Unprintable(),
    KeyboardInterrupt(),
    SystemExit(3),
    GeneratorExit(),
    CustomBase("custom"),
    UnprintableBase(),
]


def name(exc):
    return type(exc).__name__


def array(k):
    return np.array([float(k)], np.float32)


def assert_readable(error, kind, exc):
    """``error`` is a ``kind`` naming the exception's type, and can be printed."""
    assert isinstance(error, kind), error
    text = str(error)
    assert f"{name(exc)}" in text, text
    if isinstance(exc, (Unprintable, UnprintableBase)):
        assert f"{name(exc)} (its str() raised RuntimeError)" in text, text
    assert repr(error)  # never raises, even when the user's exception cannot be printed
    assert error.__cause__ is exc


def generator_of(x):
    yield x

"""An error that crosses a process: raised in a worker process or a Ray replica, raised
again in the main process (or the Ray driver) with its original traceback as its cause.

Pickling keeps an exception's ``__dict__`` but neither its traceback nor its
``__cause__``, and some exceptions do not pickle at all. :func:`portable_error` makes an
exception that survives the trip and carries its traceback as text;
:func:`restore_traceback` turns that text back into a :class:`RemoteTraceback` cause on
arrival.
"""

from __future__ import annotations

import pickle
import traceback

from mindserve._errors import describe


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker process (set as its ``__cause__``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ``RuntimeError`` with its type and message.

    Its traceback goes along as text (pickling keeps an exception's ``__dict__`` but not
    its ``__cause__``); :func:`restore_traceback` makes it the cause again on arrival."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:
        copy = RuntimeError(describe(exc))
    try:
        copy.__dict__[_TRACEBACK] = text
    except (AttributeError, TypeError):  # an exception type without a __dict__
        pass
    copy.__traceback__ = None
    return copy


def restore_traceback(exc: BaseException, where: str = "the worker process") -> BaseException:
    """In the main process: the worker's traceback of ``exc`` becomes its ``__cause__``
    (``where``: the process it was raised in, for the message)."""
    text = getattr(exc, "__dict__", {}).pop(_TRACEBACK, None)
    if text is not None:
        exc.__cause__ = RemoteTraceback(f'\n"""\nIn {where}:\n{text}"""')
    return exc


#: The key of the traceback's text in a portable error's ``__dict__`` (kept as it was, so
#: that errors pickled by an older worker still restore).
_TRACEBACK = "_mindserve_worker_traceback"

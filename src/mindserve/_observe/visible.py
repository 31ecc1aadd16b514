"""Warnings a user sees even when the application configured no logging.

mindserve's logger has a ``NullHandler``, so that a library logs nothing unless the
application configures logging (not even a failed load on top of its exception). An
actionable warning must not vanish that way. Each goes to the ``mindserve`` logger, and
when no handler of the application would receive it (nothing configured), also to a
channel Python shows by default:

* a definition or load problem (:func:`warn_definition`) as a :class:`MindServeWarning`
  through Python's ``warnings``, pointing at the user's line that caused it;
* an event while serving (:func:`warn_event`: a worker died, restarted or was given up, a
  watched directory's version failed) on ``sys.stderr``, prefixed ``mindserve:``.

An application that configured logging (``logging.basicConfig(...)``, a handler on the
``mindserve`` logger or one above it, or a level set on the ``mindserve`` logger) gets
them through logging only.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

from mindserve._errors import MindServeWarning

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def logging_configured(logger: logging.Logger) -> bool:
    """Whether the application decided where ``logger``'s records go: a handler other than
    a ``NullHandler`` on it or on a logger above it that it propagates to, or a level set
    on the ``mindserve`` logger."""
    if logging.getLogger("mindserve").level != logging.NOTSET:
        return True
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def warn_definition(logger: logging.Logger, message: str, *args: Any) -> None:
    """A definition or load problem: logged, and a :class:`MindServeWarning` at the user's
    line when logging is not configured."""
    logger.warning(message, *args, stacklevel=2)
    if not logging_configured(logger):
        warnings.warn(message % args if args else message, MindServeWarning, stacklevel=_user_level())


def warn_event(
    logger: logging.Logger, level: int, message: str, *args: Any, exc_info: BaseException | None = None
) -> None:
    """An event while serving (at ``level``): logged (with ``exc_info``'s traceback), and
    its message on ``sys.stderr`` when logging is not configured."""
    logger.log(level, message, *args, exc_info=exc_info, stacklevel=2)
    show_unconfigured(logger, level, message % args if args else message)


def show_unconfigured(logger: logging.Logger, level: int, text: str) -> None:
    """``text`` on ``sys.stderr`` when logging is not configured (for an event logged
    elsewhere already, as a version event is)."""
    if logger.isEnabledFor(level) and not logging_configured(logger):
        try:
            sys.stderr.write(f"mindserve: {logging.getLevelName(level).lower()}: {text}\n")
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):  # no stderr, or closed: nothing to tell
            pass


def _user_level() -> int:
    """The ``stacklevel`` of the first frame outside mindserve (the user's line), counted
    from the caller of ``warnings.warn``."""
    frame = sys._getframe(1)  # warn_definition
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level

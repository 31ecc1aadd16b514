"""MindSpore Serving's ``mindspore_serving.log``, for servable_config.py files and scripts
that log through it (``from mindspore_serving import log as logger``; while a config is
loaded, that import resolves here).

As in MindSpore Serving, the level comes from ``GLOG_v`` when the log is first used: ``0``
DEBUG, ``1`` INFO, ``2`` WARNING (the default), ``3`` ERROR; another value is a
``ValueError``. Messages go to stderr as ``[LEVEL] SERVING(pid:thread,process):time
[file:line] message``, on the ``mindspore_serving`` logger (its own handler, not
propagated). MindSpore Serving's log files (``GLOG_logtostderr=0``, ``GLOG_log_dir``) are
not written. The compat server's own messages go to its ``mindspore_serving.SERVING`` logger.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import Any

__all__ = ["debug", "error", "get_level", "info", "warning"]

#: ``GLOG_v`` values and the levels they name, as in MindSpore Serving.
_GLOG_LEVELS = {"3": "ERROR", "2": "WARNING", "1": "INFO", "0": "DEBUG"}
_FORMAT = "[%(levelname)s] SERVING(%(process)d:%(thread)d,%(processName)s):%(asctime)s [%(pathname)s:%(lineno)d] %(message)s"

_lock = threading.Lock()
_logger: logging.Logger | None = None


def _get_logger() -> logging.Logger:
    global _logger
    with _lock:
        if _logger is None:
            level = os.environ.get("GLOG_v", "2")
            if level not in _GLOG_LEVELS:
                raise ValueError(
                    f"Incorrect log level:{level}, Please check the configuration of GLOG_v or "
                    f"GLOG_stderrthreshold, desired log level :{_GLOG_LEVELS}"
                )
            logger = logging.getLogger("mindspore_serving")
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(_FORMAT))
            logger.addHandler(handler)
            logger.setLevel(_GLOG_LEVELS[level])
            logger.propagate = False
            _logger = logger
        return _logger


def server_logger() -> logging.Logger:
    """The logger of the compat server's own messages (MindSpore Serving's C++ log: a start
    that succeeded at INFO, a failure at ERROR). Its level is the ``SERVING`` entry of
    ``MS_SUBMODULE_LOG_v`` (``{SERVING:1}``) when there is one, else ``GLOG_v``'s."""
    parent = _get_logger()
    logger = logging.getLogger("mindspore_serving.SERVING")
    found = re.search(r"\bSERVING\s*:\s*([0-3])\b", os.environ.get("MS_SUBMODULE_LOG_v", ""))
    logger.setLevel(_GLOG_LEVELS[found.group(1)] if found else parent.level)
    return logger


def debug(msg: Any, *args: Any, **kwargs: Any) -> None:
    """Log ``msg % args`` at DEBUG."""
    _get_logger().debug(msg, *args, stacklevel=2, **kwargs)


def info(msg: Any, *args: Any, **kwargs: Any) -> None:
    """Log ``msg % args`` at INFO."""
    _get_logger().info(msg, *args, stacklevel=2, **kwargs)


def warning(msg: Any, *args: Any, **kwargs: Any) -> None:
    """Log ``msg % args`` at WARNING."""
    _get_logger().warning(msg, *args, stacklevel=2, **kwargs)


def error(msg: Any, *args: Any, **kwargs: Any) -> None:
    """Log ``msg % args`` at ERROR."""
    _get_logger().error(msg, *args, stacklevel=2, **kwargs)


def get_level() -> str:
    """The level as ``GLOG_v`` names it: ``"0"`` (DEBUG) to ``"3"`` (ERROR)."""
    name = logging.getLevelName(_get_logger().getEffectiveLevel())
    return {value: key for key, value in _GLOG_LEVELS.items()}[name]

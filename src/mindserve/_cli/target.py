"""Finding the servables a ``mindserve check`` target defines: a Python file, module or
package, or MindSpore Serving servable directories. Importing runs the user's code, so it
happens in a child process (:mod:`.probe`), never in the command's own.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from mindserve._define.servable import Servable
from mindserve._errors import MindServeError

TARGET = "Target"
CONFIG = "servable_config.py"


class TargetError(Exception):
    """The target cannot be imported, or defines no servable."""

    def __init__(self, message: str, detail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.detail = list(detail)


def load_target(target: str, dec_key: bytes | None, dec_mode: str) -> tuple[str, list[Servable]]:
    """Import ``target``; return what it is and the servables it defines."""
    if os.path.isdir(target):
        directory = os.path.abspath(target)
        if os.path.isfile(os.path.join(directory, CONFIG)):
            return "MindSpore Serving servable directory", [_compat(directory, dec_key, dec_mode)]
        children = sorted(
            entry for entry in os.listdir(directory) if os.path.isfile(os.path.join(directory, entry, CONFIG))
        )
        if children:
            return "MindSpore Serving servable directory (several servables)", [
                _compat(os.path.join(directory, child), dec_key, dec_mode) for child in children
            ]
        if os.path.isfile(os.path.join(directory, "__init__.py")):
            sys.path.insert(0, os.path.dirname(directory))
            return "Python package", _servables(
                _import(lambda: importlib.import_module(os.path.basename(directory)))
            )
        raise TargetError(
            f"{target} holds no {CONFIG} (a MindSpore Serving servable), no servable directories with one, "
            f"and no __init__.py (a Python package)"
        )
    if target.endswith(".py"):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise TargetError(f"{target} does not exist")
        name = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))

        def import_file() -> Any:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # so that worker processes and pickles find it again
            spec.loader.exec_module(module)
            return module

        return "Python file", _servables(_import(import_file))
    sys.path.insert(0, os.getcwd())
    return "Python module", _servables(_import(lambda: importlib.import_module(target)))


def _compat(directory: str, dec_key: bytes | None, dec_mode: str) -> Servable:
    from mindserve.compat._loader import load_servable

    return _import(
        lambda: load_servable(
            os.path.dirname(directory), os.path.basename(directory), dec_key=dec_key, dec_mode=dec_mode
        )
    )


def _import(load: Any) -> Any:
    try:
        return load()
    except MindServeError as exc:
        raise TargetError(str(exc)) from exc
    except BaseException as exc:  # whatever the user's module raises, SystemExit included
        frames = traceback.extract_tb(exc.__traceback__)
        user = [
            f
            for f in frames
            if "importlib" not in f.filename and f"{os.sep}mindserve{os.sep}" not in f.filename
        ]
        where = [f"{f.filename}:{f.lineno}: {f.line}" for f in (user or frames)[-3:]]
        raise TargetError(f"importing it raised {type(exc).__name__}: {exc}", where) from exc


def _servables(module: Any) -> list[Servable]:
    found: dict[int, Servable] = {}
    for value in vars(module).values():
        if isinstance(value, Servable):
            found.setdefault(id(value), value)
    if not found:
        raise TargetError(
            f"module {module.__name__} defines no mindserve.Servable at its top level "
            f"(svc = mindserve.Servable(...))"
        )
    return list(found.values())


def select(servables: list[Servable], name: str | None) -> list[Servable]:
    if name is None:
        return servables
    chosen = [s for s in servables if s.name == name]
    if not chosen:
        raise TargetError(f"no servable named {name!r}; found {[s.name for s in servables]}")
    return chosen

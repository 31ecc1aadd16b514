"""Importing a MindSpore Serving ``servable_config.py`` with mindserve standing in for it."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import sys
import types
from collections.abc import Iterator

from mindserve._define.servable import Servable
from mindserve._errors import DefinitionError, LoadError
from mindserve.compat import log, register

#: The module names a servable_config.py may import register (and the log) through.
_SHIMMED = (
    "mindspore_serving",
    "mindspore_serving.log",
    "mindspore_serving.server",
    "mindspore_serving.server.register",
    "mindspore_serving.server.register.model",
)
_counter = itertools.count()


@contextlib.contextmanager
def _shim() -> Iterator[None]:
    """Make ``mindspore_serving.server.register`` (and ``mindspore_serving.log``) resolve to
    mindserve's, then put back
    whatever ``sys.modules`` held (the real package, if installed, included)."""
    saved = {name: sys.modules.get(name) for name in _SHIMMED}
    package = types.ModuleType("mindspore_serving")
    package.__path__ = []  # a package, so that submodule imports resolve through sys.modules
    server = types.ModuleType("mindspore_serving.server")
    server.__path__ = []
    server.register = register  # type: ignore[attr-defined]
    package.server = server  # type: ignore[attr-defined]
    package.log = log  # type: ignore[attr-defined]
    sys.modules.update({"mindspore_serving": package, "mindspore_serving.server": server})
    sys.modules["mindspore_serving.log"] = log
    sys.modules["mindspore_serving.server.register"] = register
    sys.modules["mindspore_serving.server.register.model"] = register.model
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_servable(
    servable_directory: str | os.PathLike[str],
    servable_name: str,
    *,
    dec_key: bytes | None = None,
    dec_mode: str = "AES-GCM",
) -> Servable:
    """Load ``<servable_directory>/<servable_name>/servable_config.py`` as a mindserve Servable.

    The servable's version directories (``1/``, ``2/``, ...) sit beside the config file, as
    in MindSpore Serving. ``dec_key``/``dec_mode`` decrypt its MindIR files. Errors in the
    config are raised as :class:`~mindserve.LoadError` with MindSpore Serving's wording.
    """
    root = os.fspath(servable_directory)
    if (
        not isinstance(servable_name, str)
        or not servable_name
        or servable_name in (".", "..")
        or "/" in servable_name
        or "\\" in servable_name
    ):
        raise LoadError(
            f"servable name {servable_name!r} must name a directory inside {root!r}: not empty, not "
            f"'.' or '..', without '/' or '\\'"
        )
    directory = os.path.join(root, servable_name)
    config = os.path.join(directory, "servable_config.py")
    if not os.path.isdir(directory):
        raise LoadError(
            f"Check servable config failed, directory '{directory}' not exist, servable directory '{root}', "
            f"servable name '{servable_name}'"
        )
    if not os.path.isfile(config):
        raise LoadError(
            f"Check servable config failed, file '{config}' not exist,  servable directory '{root}', "
            f"servable name '{servable_name}'"
        )
    servable = Servable(servable_name, directory=directory)
    spec = importlib.util.spec_from_file_location(
        f"mindserve_compat_{servable_name}_{next(_counter)}", config
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with register._declaring(servable, dec_key, dec_mode):
        sys.path.insert(0, directory)
        try:
            with _shim():
                spec.loader.exec_module(module)
        except DefinitionError as exc:
            raise LoadError(f"servable '{servable_name}': {config}: {exc}") from exc
        except Exception as exc:
            raise LoadError(
                f"servable '{servable_name}': importing {config} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(directory)
    if not servable.methods:
        raise LoadError(
            f"There is no method registered for servable: servable '{servable_name}': {config} registers no "
            f"method (register.register_method)"
        )
    return servable

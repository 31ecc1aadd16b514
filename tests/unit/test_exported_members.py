"""The public face: ``__all__`` is honest, classes show their public home, one version number.

(``import mindserve`` staying light, in a fresh interpreter: tests/integration/test_imports.py.)"""

import types

import mindserve
from paths import ROOT


def test_all_names_exist_and_are_public():
    """Every name in __all__ exists; every public attribute is in __all__."""
    for name in mindserve.__all__:
        assert hasattr(mindserve, name), name
    public = {
        n
        for n in dir(mindserve)
        if not n.startswith("_") and not isinstance(getattr(mindserve, n), types.ModuleType)
    }
    assert public == set(mindserve.__all__) - {"__version__"}


def test_public_subpackages():
    """mindserve.compat, mindserve.testing and mindserve.http are the public subpackages;
    their modules say what they export (mindserve.http imports without its extra: Starlette
    is needed once an app is made)."""
    import mindserve.compat
    import mindserve.http
    import mindserve.testing
    from mindserve.compat import client, register, server
    from mindserve.testing import pytest_plugin

    assert mindserve.compat.__all__ == ["load_servable"]
    assert pytest_plugin.__all__ == ["mindserve_runtime"]
    assert mindserve.http.__all__ == ["BackgroundServer", "BodyTimeout", "RestApp"]
    for module in (client, register, server, mindserve.testing, pytest_plugin, mindserve.http):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)


def test_public_classes_say_they_are_from_mindserve():
    """Errors and records are importable from mindserve itself."""
    assert issubclass(mindserve.InvalidInputError, mindserve.MindServeError)
    assert issubclass(mindserve.InvalidInputError, ValueError)
    assert issubclass(mindserve.NotFoundError, LookupError)
    assert issubclass(mindserve.MindSporeUnavailableError, ImportError)


def test_exported_classes_show_their_public_home():
    """Tracebacks and reprs say mindserve.InvalidInputError, not mindserve._errors...."""
    for name in mindserve.__all__:
        value = getattr(mindserve, name)
        if isinstance(value, type):
            assert value.__module__ == "mindserve", (name, value.__module__)
    assert repr(mindserve.Batching()).startswith("Batching(")
    error = mindserve.InvalidInputError("bad")
    assert f"{type(error).__module__}.{type(error).__qualname__}" == "mindserve.InvalidInputError"


def test_the_version_is_written_in_one_place():
    import importlib.metadata
    import os

    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as handle:
        assert mindserve.__version__ not in handle.read()  # setup.py reads it from the package
    assert importlib.metadata.version("mindserve") == mindserve.__version__

"""What a model is made from: one small strategy per kind of model source.

* :class:`MindirFile`: a MindIR file (its path, relative to the version directory);
  :class:`EncryptedMindirFile`: one exported with a key.
* :class:`CellSource`: an in-memory MindSpore ``nn.Cell``.
* :class:`CallableSource`: a Python callable on numpy arrays.

:func:`source_of` tells them apart when a model is declared (without importing MindSpore);
each one knows how to open its executor, and the few facts the rest of mindserve asks of
a model's kind. ``kind`` is the public word for it (``Model.kind``, status, metrics labels).
"""

from __future__ import annotations

import os
from typing import Any, Callable, ClassVar

import attrs

from mindserve._errors import DefinitionError, LoadError, refuse_async
from mindserve._execution import mindspore as _mindspore
from mindserve._execution.executor import Executor
from mindserve._execution.integrity import checked_file
from mindserve._execution.local import CallableExecutor, NetworkExecutor

#: A device as ``(target, id)``, as the runtime resolved it (``None``: MindSpore's choice).
Device = tuple[str | None, int]


def is_cell(obj: object) -> bool:
    """Whether ``obj`` is a MindSpore ``nn.Cell`` (without importing MindSpore)."""
    return _is_cell_class(type(obj))


def _is_cell_class(cls: type) -> bool:
    return any(c.__name__ == "Cell" and c.__module__.startswith("mindspore") for c in cls.__mro__)


class ModelSource:
    """What a model is made from, and how it opens (one subclass per kind)."""

    __slots__ = ()

    #: The public name of the kind: ``mindir``, ``cell`` or ``callable``.
    kind: ClassVar[str]
    #: Whether it is a file that lives in a version directory.
    needs_files: ClassVar[bool] = False
    #: Whether it runs on MindSpore: opening it picks a device, and every new input shape
    #: costs a graph compile (so batches are padded to a few buckets by default).
    uses_mindspore: ClassVar[bool] = True
    #: Whether it may keep references to its inputs (then a worker gives it copies, not
    #: views of shared memory).
    keeps_inputs: ClassVar[bool] = False
    #: Whether it can be sent to worker processes as it is (cloudpickle).
    shippable: ClassVar[bool] = True

    @property
    def value(self) -> Any:
        """What the model was declared with (a path for a file)."""
        raise NotImplementedError

    @property
    def dec_key(self) -> bytes | None:
        return None

    @property
    def dec_mode(self) -> str:
        return "AES-GCM"

    @property
    def sha256(self) -> str | None:
        return None

    def default_name(self) -> str:
        name = getattr(self.value, "__name__", type(self.value).__name__)
        return "model" if name == "<lambda>" else name

    def check(self, name: str) -> None:
        """Declaration checks that need the model's name."""

    def with_file_options(self, dec_key: bytes | None, dec_mode: str, sha256: str | None) -> ModelSource:
        """This source with a file's key and checksum (only files take them)."""
        return self

    def label(self) -> str:
        """Short: the path of a file, the type name of an object."""
        return type(self.value).__name__

    def describe(self) -> str:
        """The path of a file, the qualified name of a function or class."""
        return getattr(self.value, "__qualname__", type(self.value).__name__)

    def located(self, version_dir: str | None) -> str:
        """Where it is loaded from (a file's absolute path in ``version_dir``)."""
        return self.describe()

    def open(self, name: str, version_dir: str | None, device: Device, where: str) -> Executor:
        """Load it and return its executor; a failure raises :class:`LoadError` naming ``where``."""
        raise NotImplementedError


@attrs.frozen
class MindirFile(ModelSource):
    """A MindIR file, exported by ``mindspore.export``."""

    kind = "mindir"
    needs_files = True

    path: str
    sha256: str | None = None

    @property
    def value(self) -> str:
        return self.path

    def default_name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]

    def with_file_options(self, dec_key: bytes | None, dec_mode: str, sha256: str | None) -> ModelSource:
        if dec_key is not None:
            return EncryptedMindirFile(self.path, sha256, dec_key=dec_key, dec_mode=dec_mode)
        return MindirFile(self.path, sha256)

    def label(self) -> str:
        return self.path

    def describe(self) -> str:
        return self.path

    def located(self, version_dir: str | None) -> str:
        """The file's absolute path: a relative path is inside the version directory."""
        path = self.path
        if not os.path.isabs(path):
            path = os.path.join(version_dir or os.getcwd(), path)
        return os.path.abspath(path)

    #: What to check when MindSpore cannot load the file.
    _hint: ClassVar[str] = " Hint: is it a complete MindIR file, exported by mindspore.export?"

    def open(self, name: str, version_dir: str | None, device: Device, where: str) -> Executor:
        path = self.located(version_dir)
        if not os.path.isfile(path):
            missing = LoadError(f"{where}: model '{name}': file {path!r} does not exist")
            missing.model_file = path  # type: ignore[attr-defined]  # for mindserve.compat's wording
            raise missing
        # What loads is what was checked: a checked file loads from a private copy of its bytes.
        with checked_file(path, self.sha256, version_dir, f"{where}: model '{name}'") as loadable:
            _mindspore.use_device(*device)
            try:
                network = _mindspore.load_mindir(loadable, self.dec_key, self.dec_mode)
            except Exception as exc:
                failed = LoadError(
                    f"{where}: model '{name}': MindSpore cannot load {path!r}: "
                    f"{_mindspore.first_line(exc).rstrip('.')}.{self._hint}"
                )
                failed.model_file = path  # type: ignore[attr-defined]  # for mindserve.compat's wording
                raise failed from exc
            specs = _mindspore.read_mindir_signature(loadable, self.dec_key, self.dec_mode)
        return NetworkExecutor(network, specs)


@attrs.frozen
class EncryptedMindirFile(MindirFile):
    """A MindIR file exported with a key (``dec_key``, ``dec_mode``)."""

    dec_key: bytes = attrs.field(kw_only=True, repr=False)
    dec_mode: str = attrs.field(kw_only=True)

    _hint = " Hint: check dec_key and dec_mode, the key and mode the file was exported with."


@attrs.frozen(eq=False)
class CellSource(ModelSource):
    """An ``nn.Cell`` built in this process."""

    kind = "cell"
    shippable = False  # a network's weights and handles seldom pickle

    cell: Any

    @property
    def value(self) -> Any:
        return self.cell

    def default_name(self) -> str:
        return type(self.cell).__name__

    def open(self, name: str, version_dir: str | None, device: Device, where: str) -> Executor:
        _mindspore.use_device(*device)
        with _mindspore.mindspore_lock():
            self.cell.set_train(False)
        return NetworkExecutor(self.cell)


@attrs.frozen(eq=False)
class CallableSource(ModelSource):
    """A Python callable taking numpy arrays and returning an array or a tuple of arrays."""

    kind = "callable"
    uses_mindspore = False
    keeps_inputs = True

    function: Callable[..., Any]

    @property
    def value(self) -> Any:
        return self.function

    def check(self, name: str) -> None:
        refuse_async(self.function, f"model '{name}'")

    def open(self, name: str, version_dir: str | None, device: Device, where: str) -> Executor:
        return CallableExecutor(self.function)


def source_of(source: object) -> ModelSource:
    """The strategy for what a model is declared with; :class:`DefinitionError` if none fits."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path.endswith(".mindir"):
            raise DefinitionError(f"a model file must be a MindIR file ending in '.mindir'; got {path!r}")
        if not os.path.isabs(path) and os.path.normpath(path).split(os.sep)[0] == os.pardir:
            raise DefinitionError(
                f"a relative model path must stay inside the version directory; got {path!r}. "
                f"Hint: put the file in the version directory, or give an absolute path."
            )
        return MindirFile(path)
    if is_cell(source):
        return CellSource(source)
    if isinstance(source, type) and _is_cell_class(source):
        raise DefinitionError(
            f"a model must be a mindspore.nn.Cell instance; got the class {source.__name__}, not an "
            f"instance. Hint: pass {source.__name__}() (with its arguments)"
        )
    if callable(source):
        return CallableSource(source)
    raise DefinitionError(
        "a model must be a MindIR path, a mindspore.nn.Cell or a Python callable on numpy "
        f"arrays; got {type(source).__name__}"
    )

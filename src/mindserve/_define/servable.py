"""The servable definition: models, stages and methods registered on one owner object."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, TypeVar, overload

import attrs

from mindserve._define.method import Method, build_method
from mindserve._define.model import Model, ModelOptions
from mindserve._define.stage import Stage
from mindserve._errors import DefinitionError

if TYPE_CHECKING:  # typing_extensions 4.0, the oldest allowed, has no Unpack
    from typing_extensions import Unpack

F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen
class ServableDefinition:
    """A snapshot of a servable taken when it starts; later edits do not affect it."""

    name: str
    directory: str | None
    models: dict[str, Model]
    methods: dict[str, Method]

    @property
    def needs_files(self) -> bool:
        """Whether any model is a file that lives in a version directory."""
        return any(m.origin.needs_files for m in self.models.values())


class Servable:
    """A named set of models, Python stages and methods.

    ``directory`` (optional) holds numeric version directories ``1/``, ``2/``, ... with the
    model files; a model path is relative to the version directory. Without a directory,
    paths are relative to the current directory and the servable is version 1.
    """

    def __init__(self, name: str, directory: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise DefinitionError(
                f"a servable name must be a non-empty str without '/' or '\\', and not '.' or '..'; "
                f"got {name!r}"
            )
        self.name = name
        self.directory = os.fspath(directory) if directory is not None else None
        self.models: dict[str, Model] = {}
        self.stages: dict[str, Stage] = {}
        self.methods: dict[str, Method] = {}

    def __repr__(self) -> str:
        return f"<Servable {self.name!r}: models {list(self.models)}, methods {list(self.methods)}>"

    # -- models ----------------------------------------------------------------------

    def model(self, source: Any, **options: Unpack[ModelOptions]) -> Model:
        """Declare a model: a MindIR path, an ``nn.Cell``, or a callable on numpy arrays.

        The keyword options are :class:`Model`'s, passed on unchanged; each is optional.
        ``name``: the model's name in the servable (default: the file's name without its
        extension, the cell's class name, or the function's name). ``with_batch_dim``
        (default ``True``): the model's first input dimension is the batch, so instances
        are stacked into batches (padded to a fixed batch size, outputs sliced back).
        ``without_batch_dim_inputs``: indices of inputs that have no batch dimension
        (instances that share a value for them are batched together).
        ``outputs`` (default 1): how many outputs the model returns. ``dec_key``/``dec_mode``
        (default ``"AES-GCM"``): the key and mode of an encrypted MindIR file. ``batching``:
        how instances from all callers are batched (a :class:`Batching`; defaults follow the
        model's batch dimension). ``sha256``: the MindIR file's SHA-256, checked at every
        load (see also a version's ``SHA256SUMS`` manifest in docs/versions.md).
        ``padding``: how inputs of varying length share a batch (a :class:`Padding`; see
        docs/batching.md).
        """
        unknown = sorted(options.keys() - ModelOptions.__optional_keys__)
        if unknown:  # as Python words it, naming this method rather than Model.__init__
            raise TypeError(f"Servable.model() got an unexpected keyword argument {unknown[0]!r}")
        model = Model(self.name, source, **options)
        if model.name in self.models:
            raise DefinitionError(
                f"servable '{self.name}' already has a model named '{model.name}'. "
                f"Hint: pass name=... to tell them apart."
            )
        self.models[model.name] = model
        return model

    # -- stages ----------------------------------------------------------------------

    def add_stage(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        batch_size: int | None = None,
        outputs: int | None = None,
    ) -> Stage:
        """Register ``function`` as a Python stage; the plain form of :meth:`stage`."""
        stage = Stage(function, name=name, batch_size=batch_size, outputs=outputs)
        if stage.name in self.stages:
            raise DefinitionError(
                f"servable '{self.name}' already has a stage named '{stage.name}'. "
                f"Hint: pass name=... to register another."
            )
        self.stages[stage.name] = stage
        return stage

    @overload
    def stage(self, function: F) -> Stage: ...

    @overload
    def stage(
        self, *, name: str | None = None, batch_size: int | None = None, outputs: int | None = None
    ) -> Callable[[F], Stage]: ...

    def stage(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        batch_size: int | None = None,
        outputs: int | None = None,
    ) -> Any:
        """Decorator: register a Python stage, with or without options.

        ``batch_size=None`` calls the function once per instance; ``batch_size=k`` calls
        it with lists of up to ``k`` instances (``0``: all of them), one list per
        parameter, and expects one result per instance back. ``outputs=N`` declares
        that it returns N values; without it, a return annotation ``-> tuple[A, B]`` (for a
        batched stage, ``-> list[tuple[A, B]]``) declares two, and anything else one.
        """
        if function is not None:
            return self.add_stage(function, name=name, batch_size=batch_size, outputs=outputs)

        def decorate(function: Callable[..., Any]) -> Stage:
            return self.add_stage(function, name=name, batch_size=batch_size, outputs=outputs)

        return decorate

    # -- methods ---------------------------------------------------------------------

    def add_method(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        outputs: str | Sequence[str] | None = None,
    ) -> Method:
        """Trace ``function`` and register it as a method; the plain form of :meth:`method`."""
        method_name = name or getattr(function, "__name__", None)
        if isinstance(method_name, str) and method_name in self.methods:
            raise DefinitionError(
                f"servable '{self.name}' already has a method named '{method_name}'. "
                f"Hint: create a new Servable to redefine it, or pass name=..."
            )
        method = build_method(function, servable=self.name, name=name, outputs=outputs)
        self.methods[method.name] = method
        return method

    @overload
    def method(self, function: F) -> F: ...

    @overload
    def method(
        self, *, name: str | None = None, outputs: str | Sequence[str] | None = None
    ) -> Callable[[F], F]: ...

    def method(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        outputs: str | Sequence[str] | None = None,
    ) -> Any:
        """Decorator: define a method, a straight-line pipeline of stages and models.

        The body runs once, now, with placeholders for its inputs (the parameter names).
        ``outputs`` names what it returns (a value, a tuple of values, or a dict of
        name to value); without it, outputs are called ``output`` or ``output_0``, ... .
        The decorated function is returned unchanged.
        """
        if function is not None:
            self.add_method(function, name=name, outputs=outputs)
            return function

        def decorate(function: F) -> F:
            self.add_method(function, name=name, outputs=outputs)
            return function

        return decorate

    def definition(self) -> ServableDefinition:
        """A snapshot of the current definition (what :meth:`Runtime.start` runs)."""
        if not self.methods:
            raise DefinitionError(
                f"servable '{self.name}' has no methods. Hint: define one with @svc.method."
            )
        return ServableDefinition(
            self.name,
            self.directory,
            dict(self.models),
            dict(self.methods),
        )

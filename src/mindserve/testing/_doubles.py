"""Servables with some models replaced, or batched deterministically, for tests.

A double is a :class:`~mindserve.Servable` that stands for another one: its definition is
the original's, taken when it starts, with the replaced models' steps pointed at Python
callables. It is handed to loading as a served definition that names the models replaced
(so that ``Model.call`` on one reaches its stand-in) and, if asked, batches
deterministically. The original is never modified.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from mindserve._config import Padding
from mindserve._define.model import Model
from mindserve._define.servable import Servable, ServableDefinition
from mindserve._errors import (
    ArgumentTypeError,
    DefinitionError,
    InvalidArgumentError,
    counted,
    refuse_async,
)
from mindserve._execution.sources import CallableSource
from mindserve._serving.served import ServedDefinition


class FixedOutput:
    """A stand-in model that returns the same outputs for every instance.

    With a batch dimension, each output is repeated along it, once per instance of the
    batch; without one, it is returned as it is.
    """

    def __init__(
        self, outputs: tuple[np.ndarray, ...], with_batch_dim: bool, unbatched: tuple[int, ...]
    ) -> None:
        self.outputs = outputs
        self.with_batch_dim = with_batch_dim
        self.unbatched = unbatched

    def __repr__(self) -> str:
        shapes = ", ".join(f"{o.dtype}{list(o.shape)}" for o in self.outputs)
        return f"FixedOutput({shapes})"

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if not self.with_batch_dim:
            return tuple(o.copy() for o in self.outputs)
        batched = [a for i, a in enumerate(arrays) if i not in self.unbatched]
        size = len(batched[0]) if batched and np.ndim(batched[0]) else 1
        return tuple(np.repeat(o[np.newaxis], size, axis=0) for o in self.outputs)


def _fixed_outputs(name: str, model: Model, value: Any) -> tuple[np.ndarray, ...]:
    values = value if isinstance(value, tuple) else (value,)
    arrays = []
    for position, item in enumerate(values):
        array = np.asarray(item) if item is not None else None
        if array is None or array.dtype == object:
            raise ArgumentTypeError(
                f"replace_models: model '{name}' output {position}: a fixed output must be a numpy "
                f"array or a number (or a tuple of them, one per output); got {type(item).__name__}. "
                f"Hint: pass a callable to compute outputs from the inputs."
            )
        arrays.append(array)
    if model.outputs is not None and len(arrays) != model.outputs:
        raise InvalidArgumentError(
            f"replace_models: model '{name}' is declared with outputs={model.outputs}; the "
            f"replacement gives {counted(len(arrays), 'fixed output')}. Hint: pass a tuple of "
            f"{model.outputs} arrays."
        )
    return tuple(arrays)


def _stand_in(name: str, model: Model, replacement: Any, padding: Padding | None = None) -> Model:
    """A copy of ``model`` that runs ``replacement`` (a callable, or fixed outputs), padded
    as ``padding`` says if given (else as ``model`` is)."""
    if callable(replacement) and not isinstance(replacement, np.ndarray):
        refuse_async(replacement, f"the replacement of model '{name}'")
        function = replacement
    else:
        function = FixedOutput(
            _fixed_outputs(name, model, replacement), model.with_batch_dim, model.without_batch_dim_inputs
        )
    if padding is not None and not isinstance(padding, Padding):
        raise ArgumentTypeError(
            f"replace_models: the padding of model '{name}' must be a mindserve.Padding; got "
            f"{type(padding).__name__}"
        )
    if padding is not None and padding.enabled and not model.with_batch_dim:
        raise DefinitionError(f"model '{name}': padding pads batches; it needs with_batch_dim=True")
    stand_in = copy.copy(model)
    stand_in.origin = CallableSource(function)
    if padding is not None:
        stand_in.padding = padding
    return stand_in


def _unknown(servable: str, names: list[str], models: list[str]) -> InvalidArgumentError:
    hints = [close[0] for n in names if (close := difflib.get_close_matches(n, models, n=1))]
    hint = f" Hint: did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    return InvalidArgumentError(
        f"replace_models: servable '{servable}' has no model named "
        f"{', '.join(repr(n) for n in names)}; its models are {models}.{hint}"
    )


class ServableDouble(Servable):
    """A servable standing for ``original`` in a test; see :func:`replace_models`.

    It is a view: models, stages and methods defined on the original later show up in it
    (define them on the original). Its name and directory are the original's.
    """

    def __init__(
        self,
        original: Servable,
        replacements: Mapping[str, Any],
        *,
        deterministic: bool = False,
        padding: Mapping[str, Padding] | None = None,
    ) -> None:
        # Servable.__init__ is not called: the double keeps no definition of its own.
        self.original = original
        self.name = original.name
        self.directory = original.directory
        self.replacements = dict(replacements)
        self.deterministic = deterministic
        #: Replaced model -> the Padding its stand-in declares (else the model's own).
        self.padding = dict(padding or {})

    @property
    def models(self) -> dict[str, Model]:  # type: ignore[override]
        return self.original.models

    @property
    def stages(self) -> dict[str, Any]:  # type: ignore[override]
        return self.original.stages

    @property
    def methods(self) -> dict[str, Any]:  # type: ignore[override]
        return self.original.methods

    def __repr__(self) -> str:
        what = []
        if self.replacements:
            what.append(f"models {list(self.replacements)} replaced")
        if self.deterministic:
            what.append("batched deterministically")
        return f"<Servable {self.name!r} for a test: {', '.join(what) or 'unchanged'}>"

    def definition(self) -> ServableDefinition:
        base = ServedDefinition.of(self.original.definition(), self.deterministic)
        unknown = [n for n in self.replacements if n not in base.models]
        if unknown:
            raise _unknown(self.name, unknown, list(base.models))
        swapped = {
            id(base.models[name]): _stand_in(name, base.models[name], replacement, self.padding.get(name))
            for name, replacement in self.replacements.items()
        }
        models = {name: swapped.get(id(model), model) for name, model in base.models.items()}
        methods = {
            name: attrs.evolve(
                method,
                steps=tuple(
                    attrs.evolve(step, callee=swapped[id(step.callee)])
                    if id(step.callee) in swapped
                    else step
                    for step in method.steps
                ),
            )
            for name, method in base.methods.items()
        }
        # A model replaced twice still stands for the model the declarations call.
        replaced = {**base.replaced, **{name: base.declared(base.models[name]) for name in self.replacements}}
        return attrs.evolve(base, models=models, methods=methods, replaced=replaced)


def replace_models(
    servable: Servable, replacements: Mapping[str, Any], *, padding: Mapping[str, Padding] | None = None
) -> Servable:
    """A servable like ``servable`` with some of its models replaced, for a test.

    ``replacements`` maps a model's name to what stands in for it:

    * a callable: it gets what the model would get, each input stacked along the batch
      dimension (numpy arrays), and returns an array or a tuple of arrays, one per output,
      with the batch dimension first (as a callable model of a servable does);
    * a fixed output: an array or a number (a tuple of them for a model with several
      outputs), returned for every instance: repeated along the batch dimension once per
      instance of the batch (as it is, for a model declared ``with_batch_dim=False``).

    The models keep their batching options and their :class:`~mindserve.Padding`, so
    batches form as they would. ``padding`` maps a replaced model's name to the Padding its
    stand-in declares instead: a MindIR model whose variable-length inputs the load-time
    probe pads (a stand-in has no file to probe), e.g.
    ``padding={"encoder": Padding(inputs={0: 0}, mask={1: 0}, outputs={0: 0})}``. A replaced
    MindIR model needs no file (and a servable whose every file model is replaced needs no
    version directory); MindSpore is not imported for a replaced model. ``servable`` is not
    modified: start the returned servable, under the same name. A model's name is the one
    ``svc.model`` gave it (for ``mindserve.compat``, its file name, as ``declare_model``
    named it); an unknown name raises :class:`~mindserve.InvalidArgumentError` listing the
    models.
    """
    if not isinstance(servable, Servable):
        raise ArgumentTypeError(
            f"replace_models() takes a mindserve.Servable first; got {type(servable).__name__}"
        )
    if not isinstance(replacements, Mapping):
        raise ArgumentTypeError(
            f"replace_models() takes a dict of model name to callable or fixed output; got "
            f"{type(replacements).__name__}"
        )
    bad = [n for n in replacements if not isinstance(n, str)]
    if bad:
        raise ArgumentTypeError(f"replace_models: model names are str; got {bad!r}")
    unknown = [n for n in replacements if n not in servable.models]
    if unknown:
        raise _unknown(servable.name, unknown, list(servable.models))
    padding = {} if padding is None else padding
    if not isinstance(padding, Mapping):
        raise ArgumentTypeError(
            f"replace_models(padding=...) takes a dict of model name to mindserve.Padding; got "
            f"{type(padding).__name__}"
        )
    unpadded = [n for n in padding if n not in replacements]
    if unpadded:
        raise InvalidArgumentError(
            f"replace_models: padding names {unpadded!r}, which are not replaced; only a replaced "
            f"model's stand-in can declare its padding (replaced: {list(replacements)})"
        )
    for name, replacement in replacements.items():
        try:
            _stand_in(name, servable.models[name], replacement, padding.get(name))  # reject a bad one now
        except DefinitionError as exc:
            raise InvalidArgumentError(f"replace_models: {exc}") from None
    return ServableDouble(servable, replacements, padding=padding)

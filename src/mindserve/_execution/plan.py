"""A model's plan: what its declaration and its executor's input specs say about running it.

:meth:`ModelPlan.of` is pure (no queue, no thread, nothing logged): it runs the load-time
checks of a declaration against the executor's signature, and settles how many inputs an
instance has, each input's per-instance spec, the batch size fixed in the file, and the
effective :class:`~mindserve.Batching` (the 64 default and the power-of-two buckets). The
warm-up (:func:`mindserve._execution.executor.warm_up`) then gives a :class:`WarmUp`, and
:meth:`ModelPlan.warmed` the plan a model's queue runs with. ``mindserve check`` and
``mindserve info`` use the same plan without loading anything.

The plan is made once, where the model runs: between :meth:`ModelPlan.of` and the warm-up,
the load-time padding probe (:mod:`mindserve._execution.probe`) may pad it, and keeps what it
found in its words (:class:`Finding`). A worker process sends its plan to the main process,
whose model queue runs with it as it is and says what the probe found.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import numpy as np

from mindserve._batching import shapes as _batching
from mindserve._batching.lengths import Lengths
from mindserve._config import Batching, Padding
from mindserve._errors import LoadError, counted
from mindserve._execution.padding import declared_lengths
from mindserve._values import TensorSpec

#: Largest batch fed to a model that accepts any batch size.
DEFAULT_MAX_BATCH_SIZE = 64

Specs = tuple[TensorSpec, ...]


class _Origin(Protocol):
    @property
    def uses_mindspore(self) -> bool: ...


class Declaration(Protocol):
    """What a plan reads of a model's declaration (:class:`mindserve.Model`)."""

    @property
    def name(self) -> str: ...
    @property
    def origin(self) -> _Origin: ...
    @property
    def with_batch_dim(self) -> bool: ...
    @property
    def without_batch_dim_inputs(self) -> tuple[int, ...]: ...
    @property
    def batching(self) -> Batching | None: ...
    @property
    def inputs(self) -> int | None: ...
    @property
    def outputs(self) -> int | None: ...
    @property
    def reshape_inputs(self) -> bool: ...
    @property
    def padding(self) -> Padding | None: ...


@attrs.frozen
class WarmUp:
    """What a warm-up did: each batch size it ran with its seconds (one entry per graph:
    a padded model runs each batch size at each length bucket, ``lengths``), and the
    buckets kept (pruned, if ``Batching(prune_buckets=True)`` asked)."""

    compiled: tuple[tuple[int, float], ...]
    buckets: tuple[int, ...] | None
    #: The length buckets each batch size ran at (padded models; empty otherwise).
    lengths: tuple[int, ...] = ()


@attrs.frozen
class Finding:
    """What the load-time padding probe found, in its words (``level``, ``message`` % ``args``):
    told once, in the process that keeps the model's queue
    (:func:`mindserve._execution.probe.tell`), wherever the probe ran."""

    level: int
    message: str
    args: tuple[Any, ...]


@attrs.frozen
class ModelPlan:
    """How one model of a version runs; see the module's docstring."""

    #: The model's name, and the version it runs in (``servable 's' version 1``).
    name: str
    where: str
    #: The executor's input specs, with the batch dimension (``None`` when unknown).
    input_specs: Specs | None
    #: How many inputs an instance has (``None`` when unknown); with padding, the inputs
    #: mindserve fills in (a mask, the lengths) are not an instance's.
    n_inputs: int | None
    #: Per-instance spec of each input of an instance (the batch dimension dropped), or ``None``.
    instance_specs: tuple[TensorSpec | None, ...] | None
    #: The batch size the model was exported with, or ``None`` if it takes any.
    fixed_batch_size: int | None
    #: The inputs that have no batch dimension.
    unbatched: frozenset[int]
    #: The effective batching options (buckets may be pruned at warm-up, if asked).
    batching: Batching
    with_batch_dim: bool
    #: How many outputs it returns, checked on every batch (``None``: whatever it gives).
    outputs: int | None
    #: mindserve.compat: speak MindSpore Serving's words.
    reshape_inputs: bool
    #: What the warm-up did (``None`` before it, or when it was turned off).
    warm: WarmUp | None = None
    #: How variable-length inputs are padded (``None``: each shape is its own batch).
    lengths: Lengths | None = None
    #: What the load-time padding probe found, to tell (``None``: it did not run, or found
    #: nothing to say). Its words only: two plans that pad alike are equal.
    probed: Finding | None = attrs.field(default=None, eq=False)

    @classmethod
    def of(cls, model: Declaration, specs: Specs | None, where: str) -> ModelPlan:
        """The plan of ``model`` on an executor with ``specs``; :class:`LoadError` when the
        declaration does not fit them."""
        padding = getattr(model, "padding", None)
        filled = padding.filled if padding is not None and padding.enabled else ()
        check_signature(model, specs, where, len(filled))
        unbatched = frozenset(model.without_batch_dim_inputs)
        lengths = declared_lengths(
            padding,
            name=model.name,
            specs=specs,
            inputs=model.inputs,
            outputs=model.outputs,
            with_batch_dim=model.with_batch_dim,
            unbatched=model.without_batch_dim_inputs,
            where=where,
        )
        instance_specs: tuple[TensorSpec | None, ...] | None = None
        fixed: int | None = None
        if specs is not None:
            instance_specs = tuple(
                s if (not model.with_batch_dim or i in unbatched) else s.drop_batch_dim()
                for i, s in enumerate(specs)
                if i not in filled
            )
            if model.with_batch_dim:
                batched = [s for i, s in enumerate(specs) if i not in unbatched]
                if batched and batched[0].shape[0] is not None:
                    fixed = batched[0].shape[0]
        return cls(
            name=model.name,
            where=where,
            input_specs=specs,
            n_inputs=len(specs) - len(filled) if specs is not None else model.inputs,
            instance_specs=instance_specs,
            fixed_batch_size=fixed,
            unbatched=unbatched,
            batching=resolve_batching(
                model.batching or Batching(),
                with_batch_dim=model.with_batch_dim,
                fixed=fixed,
                pads=model.origin.uses_mindspore,
                what=f"{where}: model '{model.name}'",
            ),
            with_batch_dim=model.with_batch_dim,
            outputs=model.outputs,
            reshape_inputs=model.reshape_inputs,
            lengths=lengths,
        )

    def with_lengths(self, lengths: Lengths | None, probed: Finding | None = None) -> ModelPlan:
        """This plan padding its inputs as ``lengths`` says (the load-time probe's finding,
        ``probed`` in its words)."""
        return attrs.evolve(self, lengths=lengths, probed=probed)

    def warmed(self, result: WarmUp) -> ModelPlan:
        """This plan after a warm-up: its buckets kept, the sizes it compiled."""
        return attrs.evolve(self, batching=attrs.evolve(self.batching, buckets=result.buckets), warm=result)

    @property
    def warmed_up(self) -> tuple[int, ...]:
        """The batch sizes the warm-up ran (each compiled once at load, at every length bucket
        of a padded model)."""
        return () if self.warm is None else tuple(dict.fromkeys(size for size, _ in self.warm.compiled))

    def warm_up_instance(self, length: int | None = None) -> tuple[np.ndarray, ...] | None:
        """An instance of zeros, when every input's dtype and shape is known (a padded axis
        at ``length``); else ``None`` (nothing to warm up with)."""
        specs = self.instance_specs
        if specs is None or any(s is None or s.dtype is None for s in specs):
            return None
        axes = self.lengths.caller_axes if self.lengths is not None and length else (None,) * len(specs)
        shapes = [
            s.shape if axis is None else (*s.shape[:axis], length, *s.shape[axis + 1 :])  # type: ignore[union-attr]
            for s, axis in zip(specs, axes)
        ]
        if any(None in shape for shape in shapes):
            return None
        return tuple(np.zeros(shape, s.dtype) for shape, s in zip(shapes, specs))  # type: ignore[arg-type,union-attr]

    def warm_up_lengths(self) -> tuple[int | None, ...]:
        """The length buckets a warm-up runs each batch size at (``(None,)``: not padded)."""
        if self.lengths is None:
            return (None,)
        return self.lengths.buckets if self.batching.warm_up else self.lengths.buckets[:1]

    def warm_up_sizes(self) -> tuple[int, ...]:
        """The batch sizes a warm-up runs: every bucket, or one batch of 1 to check the outputs."""
        return self.batching.buckets if self.batching.warm_up and self.batching.buckets else (1,)

    @property
    def prunes(self) -> bool:
        """Whether the warm-up times the buckets and keeps only those worth it."""
        return self.batching.prune_buckets and self.fixed_batch_size is None and len(self.warm_up_sizes()) > 1

    def serving_count(self, what: str, registered: int, actual: int) -> str:
        """For mindserve.compat, MindSpore Serving's words for a count that differs from the
        model's (a prefix; empty for native servables)."""
        return serving_count(self.name, self.reshape_inputs, what, registered, actual)


def serving_count(name: str, reshape_inputs: bool, what: str, registered: int, actual: int) -> str:
    """See :meth:`ModelPlan.serving_count`."""
    if not reshape_inputs:
        return ""
    key, _, subgraph = name.rpartition("#") if "#" in name else (name, "", "0")
    return (
        f"The {what} count {registered} in register_method not equal to the count {actual} defined in "
        f"model, model info: {key}, subgraph: {subgraph}. "
    )


def check_signature(model: Declaration, specs: Specs | None, where: str, filled: int = 0) -> None:
    """The load-time checks of a declaration against its executor's input specs (``filled``:
    how many inputs mindserve fills in, which methods do not pass)."""
    if specs is not None and model.inputs is not None and len(specs) - filled != model.inputs:
        takes = counted(len(specs), "input") + (
            f", {filled} of them filled in by mindserve" if filled else ""
        )
        raise LoadError(
            f"{serving_count(model.name, model.reshape_inputs, 'inputs', model.inputs, len(specs))}{where}: "
            f"model '{model.name}' takes {takes}, but a method calls it with {model.inputs}"
        )
    if model.with_batch_dim and specs is not None:
        bad = [i for i in model.without_batch_dim_inputs if i >= len(specs)]
        if bad:
            raise LoadError(
                f"{where}: model '{model.name}' has {len(specs)} inputs; without_batch_dim_inputs names {bad}"
            )
        if any(len(s.shape) == 0 for i, s in enumerate(specs) if i not in model.without_batch_dim_inputs):
            raise LoadError(
                f"{where}: model '{model.name}' has a scalar input, which has no batch "
                f"dimension. Hint: declare it with with_batch_dim=False or list the input "
                f"in without_batch_dim_inputs."
            )


def resolve_batching(
    config: Batching, *, with_batch_dim: bool, fixed: int | None, pads: bool, what: str
) -> Batching:
    """The effective batching: explicit options, else defaults from the batch dimension.

    ``fixed``: the batch size fixed in the file; ``pads``: whether batches are padded to
    buckets by default (each new shape costs a compile); ``what`` names the model in errors.
    """
    if not with_batch_dim:
        return attrs.evolve(config, max_batch_size=1, buckets=None)
    if fixed is not None:
        if config.max_batch_size not in (None, fixed) or config.buckets not in (None, (fixed,)):
            raise LoadError(
                f"{what} was exported with batch size {fixed}, so it "
                f"always runs batches of {fixed}; got {config!r}. Hint: export it with a dynamic "
                f"batch dimension (Tensor(shape=[None, ...])) to choose batch sizes."
            )
        return attrs.evolve(config, max_batch_size=fixed, buckets=(fixed,))
    buckets = config.buckets
    largest = config.max_batch_size or (buckets[-1] if buckets else DEFAULT_MAX_BATCH_SIZE)
    if buckets is not None and buckets[-1] < largest:
        raise LoadError(f"{what}: the largest bucket {buckets[-1]} is smaller than max_batch_size={largest}")
    if buckets is None and pads:
        buckets = _batching.power_of_two_buckets(largest)
    return attrs.evolve(config, max_batch_size=largest, buckets=buckets)


def default_batching() -> Batching:
    """How a MindSpore model that takes any batch size batches when nothing is said."""
    return resolve_batching(Batching(), with_batch_dim=True, fixed=None, pads=True, what="")

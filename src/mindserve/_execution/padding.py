"""A model's declared :class:`~mindserve.Padding`, settled against its input specs.

:func:`declared_lengths` is pure: it checks a declaration against the specs the model file
reports (or the method's input count, for a model that reports none) and returns the
:class:`~mindserve._batching.lengths.Lengths` its batches are padded with, or raises
:class:`LoadError` naming what does not fit. :func:`dynamic_axes` finds the inputs whose
non-batch dimensions are dynamic, which the load-time probe (:mod:`.probe`) tries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mindserve._batching.lengths import DEFAULT_MAX_LENGTH, Lengths, length_buckets
from mindserve._config import Padding
from mindserve._errors import LoadError
from mindserve._values import TensorSpec


def dynamic_axes(instance_specs: Sequence[TensorSpec | None], skip: Sequence[int] = ()) -> dict[int, int]:
    """Input -> its first dynamic axis, for each input of one instance that has one."""
    axes = {}
    for position, spec in enumerate(instance_specs):
        if spec is not None and position not in skip and None in spec.shape:
            axes[position] = spec.shape.index(None)
    return axes


def declared_lengths(
    padding: Padding | None,
    *,
    name: str,
    specs: tuple[TensorSpec, ...] | None,
    inputs: int | None,
    outputs: int | None,
    with_batch_dim: bool,
    unbatched: Sequence[int],
    where: str,
) -> Lengths | None:
    """How a model's batches are padded, as its ``padding`` declares (``None``: not at all).

    ``specs``: the model's input specs with the batch dimension (``None``: unknown);
    ``inputs``: how many inputs its methods call it with; ``outputs``: its output count.
    """
    if padding is None or not padding.enabled:
        return None
    what = f"{where}: model '{name}'"
    if not with_batch_dim:
        raise LoadError(f"{what}: Padding pads a batch of instances; it needs with_batch_dim=True")
    if unbatched:
        raise LoadError(
            f"{what}: Padding and without_batch_dim_inputs cannot be combined (yet). Hint: give the "
            f"shared input a batch dimension, or drop the Padding."
        )
    filled = padding.filled
    if specs is not None:
        n_inputs = len(specs)
    elif inputs is not None:
        n_inputs = inputs + len(filled)
    else:
        raise LoadError(f"{what}: Padding needs to know its inputs; no method calls the model")
    named = [*(padding.inputs or {}), *filled]
    stray = sorted(p for p in named if p >= n_inputs)
    if stray:
        raise LoadError(f"{what} takes {n_inputs} inputs; Padding names input(s) {stray}")
    instance = None if specs is None else [s.drop_batch_dim() for s in specs]
    axes = padding.inputs
    if axes is None:
        if instance is None:
            raise LoadError(
                f"{what} does not report its input shapes: name its padded inputs, "
                f"Padding(inputs={{input: axis}})"
            )
        axes = dynamic_axes(instance, filled)
        if not axes:
            raise LoadError(
                f"{what}: Padding found no input with a dynamic non-batch dimension in the model file "
                f"({', '.join(s.describe() for s in instance)}). Hint: export it with "
                f"Tensor(shape=[None, None, ...]), or name the inputs, Padding(inputs={{input: axis}})"
            )
    elif instance is not None:
        for position, axis in axes.items():
            dims = instance[position].shape
            if axis >= len(dims) or dims[axis] is not None:
                fixed = "it has no such axis" if axis >= len(dims) else f"it is fixed at {dims[axis]}"
                raise LoadError(
                    f"{what}: Padding pads input {position} along axis {axis}, but the model file says "
                    f"{instance[position].describe()} ({fixed}). Hint: export it with that dimension None."
                )
    for label, mapping in (("mask", padding.mask), ("lengths", padding.lengths)):
        stray_map = {k: v for k, v in (mapping or {}).items() if v not in axes}
        if stray_map:
            raise LoadError(
                f"{what}: Padding {label}={stray_map} names unpadded input(s); padded: {sorted(axes)}"
            )
    if specs is not None:
        for label, mapping, rank in (("mask", padding.mask, 2), ("lengths", padding.lengths, 1)):
            for position in mapping or {}:
                if len(specs[position].shape) != rank:
                    shape = "(batch, length)" if rank == 2 else "(batch,)"
                    raise LoadError(
                        f"{what}: Padding fills input {position} as a {label} of shape {shape}, but the "
                        f"model file says {specs[position].describe()}"
                    )
    first = min(axes)
    follows: dict[int, tuple[int, int]] = {}
    for output, item in (padding.outputs or {}).items():
        position, axis = (first, item) if isinstance(item, int) else item
        if position not in axes:
            raise LoadError(
                f"{what}: Padding outputs[{output}] follows input {position}, which is not padded"
            )
        if outputs is not None and output >= outputs:
            raise LoadError(f"{what} has {outputs} output(s); Padding outputs names output {output}")
        follows[output] = (position, axis)
    values = padding.value
    return Lengths(
        axes=dict(axes),
        buckets=padding.buckets or length_buckets(padding.max_length or DEFAULT_MAX_LENGTH),
        values={p: (values.get(p, 0) if isinstance(values, dict) else values) for p in axes},
        masks=dict(padding.mask or {}),
        lengths=dict(padding.lengths or {}),
        outputs=follows,
        n_inputs=n_inputs,
        dtypes={
            **{p: _dtype(specs, p, np.float32) for p in padding.mask or {}},
            **{p: _dtype(specs, p, np.int32) for p in padding.lengths or {}},
        },
    )


def _dtype(specs: tuple[TensorSpec, ...] | None, position: int, default: Any) -> np.dtype:
    dtype = None if specs is None else specs[position].dtype
    return np.dtype(default) if dtype is None else dtype

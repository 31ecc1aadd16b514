"""Pure batching helpers: group instances that can share a batch, stack, pad and slice.

Nothing here runs a model; :mod:`mindserve._model_runner` does, with these helpers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence

import numpy as np

Arrays = tuple  # one instance's model inputs: a tuple of numpy arrays


def batch_key(arrays: Arrays, unbatched: Sequence[int]) -> Hashable:
    """Instances with equal keys can be stacked into one batch.

    Batched inputs must agree on dtype and per-instance shape; inputs without a batch
    dimension must be equal, since one value is passed for the whole batch.
    """
    key = []
    for i, array in enumerate(arrays):
        part: tuple = (array.dtype.str, array.shape)
        if i in unbatched:
            part += (hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest(),)
        key.append(part)
    return tuple(key)


def group(instances: Sequence[Arrays], unbatched: Sequence[int]) -> list[list[int]]:
    """Indices of instances grouped by :func:`batch_key`, groups in first-seen order."""
    groups: dict[Hashable, list[int]] = {}
    for index, arrays in enumerate(instances):
        groups.setdefault(batch_key(arrays, unbatched), []).append(index)
    return list(groups.values())


def chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    """Split ``indices`` into runs of at most ``size``."""
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def stack(
    instances: Sequence[Arrays], unbatched: Sequence[int], pad_to: int | None = None
) -> tuple[np.ndarray, ...]:
    """Stack instances along a new first axis, padding with copies of instance 0.

    Inputs listed in ``unbatched`` are taken from instance 0 as they are.
    """
    count = len(instances)
    extra = 0 if pad_to is None else pad_to - count
    if extra < 0:
        raise ValueError(f"cannot pad {count} instances to a batch of {pad_to}")
    stacked = []
    for i in range(len(instances[0])):
        if i in unbatched:
            stacked.append(instances[0][i])
            continue
        parts = [arrays[i] for arrays in instances] + [instances[0][i]] * extra
        stacked.append(np.stack(parts))
    return tuple(stacked)


def unstack(outputs: Sequence[np.ndarray], batch: int, count: int) -> list[tuple] | str:
    """Slice each output's first axis back into ``count`` instances (dropping padding).

    Returns a message instead when an output's first dimension is not the batch size.
    """
    for position, output in enumerate(outputs):
        if output.ndim == 0 or output.shape[0] != batch:
            return (
                f"model output {position} has shape {output.shape}, but its first dimension "
                f"should be the batch size {batch}"
            )
    return [tuple(output[j].copy() for output in outputs) for j in range(count)]

"""Pure helpers to bucket, group, stack, pad and slice instances into batches.

Nothing here runs a model or a thread; :mod:`mindserve._batching.scheduler` and
:mod:`mindserve._serving.model_queue` do, with these helpers.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Container, Hashable, Mapping, Sequence

import numpy as np


def power_of_two_buckets(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... below ``max_batch_size``, and ``max_batch_size`` itself."""
    sizes = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return (*sizes, max_batch_size)


def bucket_for(count: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``count`` instances (``buckets`` ascending)."""
    position = bisect.bisect_left(buckets, count)
    if position == len(buckets):
        raise ValueError(f"{count} instances do not fit the largest bucket {buckets[-1]}")
    return buckets[position]


def prune_buckets(seconds: Mapping[int, float]) -> tuple[int, ...]:
    """Keep a bucket only if a batch of it runs faster than a batch of every larger bucket.

    ``seconds`` maps a batch size to its measured time per call. Padding a batch up to a
    larger bucket that runs at least as fast is never worse, so slower buckets are dropped.
    """
    kept: list[int] = []
    fastest_larger = float("inf")
    for size in sorted(seconds, reverse=True):
        if seconds[size] < fastest_larger:
            kept.append(size)
            fastest_larger = seconds[size]
    return tuple(sorted(kept))


Arrays = tuple  # one instance's model inputs: a tuple of numpy arrays


def batch_key(arrays: Arrays, unbatched: Container[int]) -> Hashable:
    """Instances with equal keys can be stacked into one batch.

    Batched inputs must agree on dtype and per-instance shape; inputs without a batch
    dimension must be equal, since one value is passed for the whole batch.
    """
    if not unbatched:
        return tuple([(array.dtype, array.shape) for array in arrays])
    key = []
    for i, array in enumerate(arrays):
        part: tuple = (array.dtype, array.shape)
        if i in unbatched:
            part += (hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest(),)
        key.append(part)
    return tuple(key)


def split(keys: Sequence[Hashable] | None, count: int, limit: int) -> list[list[int]]:
    """Batches of indices ``0..count-1``: grouped by key (groups in first-seen order), each
    group cut into batches of at most ``limit``. ``keys=None``: all share one group."""
    if keys is None:
        groups = [list(range(count))]
    else:
        by_key: dict[Hashable, list[int]] = {}
        for index in range(count):
            by_key.setdefault(keys[index], []).append(index)
        groups = list(by_key.values())
    return [group[i : i + limit] for group in groups for i in range(0, len(group), limit)]


def stack(
    instances: Sequence[Arrays], unbatched: Container[int], pad_to: int | None = None, copy: bool = True
) -> tuple[np.ndarray, ...]:
    """Stack instances along a new first axis, padding with copies of instance 0.

    Inputs listed in ``unbatched`` are taken from instance 0 as they are. ``copy=False``:
    a lone instance that needs no padding is passed as a view of its own arrays (for a
    model that only reads its inputs; MindSpore also runs a little faster on them).
    """
    count = len(instances)
    extra = 0 if pad_to is None else pad_to - count
    if extra < 0:
        raise ValueError(f"cannot pad {count} instances to a batch of {pad_to}")
    if count == 1 and not extra and not copy and not unbatched:
        return tuple([array[None] for array in instances[0]])
    stacked = []
    for i in range(len(instances[0])):
        if i in unbatched:
            stacked.append(instances[0][i])
            continue
        parts = [arrays[i] for arrays in instances]
        if extra:
            parts += [parts[0]] * extra
        # Instances of one batch share dtype and shape (batch_key); np.array stacks such a
        # list about 3x faster than np.stack.
        stacked.append(np.array(parts))
    return tuple(stacked)


def unstack(outputs: Sequence[np.ndarray], batch: int, count: int) -> list[tuple] | str:
    """Slice each output's first axis back into ``count`` instances (dropping padding).

    Each instance gets a view of its own row (rows never overlap), not a copy: copying
    every row costs more than the rest of the slicing. Returns a message instead when an
    output's first dimension is not the batch size.
    """
    for position, output in enumerate(outputs):
        if output.ndim == 0 or output.shape[0] != batch:
            return (
                f"model output {position} has shape {output.shape}, but its first dimension "
                f"should be the batch size {batch}"
            )
    # Iterating an array yields its rows as views, in C; zip pairs them up per instance.
    return list(zip(*(output[:count] for output in outputs)))

"""Variable-length inputs: the length buckets, keys, padding and slicing of a padded model.

A :class:`Lengths` is what a model's :class:`~mindserve.Padding` (or the load-time probe,
:mod:`mindserve._execution.probe`) settled against the model's inputs: which input axis
varies, the length buckets, the pad values, the inputs mindserve fills in (a mask, the
lengths) and the outputs that follow a padded axis. Nothing here runs a model or a thread:
an instance's batch key uses its length bucket instead of its length (:meth:`Lengths.key`),
so instances of different lengths in one bucket share a batch; :meth:`Lengths.stack` pads
a batch to its bucket and fills the mask and lengths; :meth:`Lengths.unstack` slices the
outputs back to each instance's length.

Positions are the model's input positions; callers send the inputs that are not filled
in, in order (``callers``).
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Mapping, Sequence

import attrs
import numpy as np

from mindserve._batching import shapes as _batching

#: The longest instance accepted when nothing else says, and the smallest default bucket.
DEFAULT_MAX_LENGTH = 512
SMALLEST_DEFAULT_BUCKET = 8


def length_buckets(max_length: int) -> tuple[int, ...]:
    """8, 12, 16, 24, 32, 48, ...: powers of two and halfway steps (1.5 times one), from 8
    below ``max_length``, and ``max_length`` itself.

    Each bucket is at most 1.5 times the one below, so padding a length to its bucket adds
    at most half of it (about a sixth on average, against a third with powers of two), for
    2 buckets per doubling: 12 up to 512, so the warm-up's grid stays small.
    """
    sizes = []
    size = SMALLEST_DEFAULT_BUCKET
    while size < max_length:
        sizes.append(size)
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return (*sizes, max_length)


@attrs.frozen
class Lengths:
    """How a model's variable-length inputs are padded; see the module's docstring."""

    #: Model input -> the axis of one instance (no batch dimension) whose length varies.
    axes: Mapping[int, int]
    #: The lengths a batch is padded to (ascending); the last is the longest accepted.
    buckets: tuple[int, ...]
    #: Model input -> pad value (padded inputs only).
    values: Mapping[int, float]
    #: Filled model input -> the padded input it is a mask (1 on real positions) of.
    masks: Mapping[int, int]
    #: Filled model input -> the padded input whose lengths it holds.
    lengths: Mapping[int, int]
    #: Output -> (padded model input, axis of one instance's output) it follows.
    outputs: Mapping[int, tuple[int, int]]
    #: How many inputs the model takes (callers send those not filled in).
    n_inputs: int
    #: Filled model input -> its dtype.
    dtypes: Mapping[int, np.dtype]
    #: ``"declared"`` (a :class:`~mindserve.Padding`) or ``"probe"`` (found safe at load).
    source: str = "declared"
    #: The model inputs callers send, in the order they send them.
    callers: tuple[int, ...] = attrs.field(init=False)
    #: For each input a caller sends, its padded axis (``None``: not padded).
    caller_axes: tuple[int | None, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        callers = tuple(p for p in range(self.n_inputs) if p not in self.masks and p not in self.lengths)
        object.__setattr__(self, "callers", callers)
        object.__setattr__(self, "caller_axes", tuple(self.axes.get(p) for p in callers))

    @property
    def limit(self) -> int:
        """The longest instance accepted."""
        return self.buckets[-1]

    def bucket_for(self, length: int) -> int:
        return self.buckets[bisect.bisect_left(self.buckets, length)]

    def check(self, arrays: Sequence[np.ndarray]) -> str | None:
        """Why an instance (the inputs a caller sends) cannot be padded, or ``None``."""
        for array, position, axis in zip(arrays, self.callers, self.caller_axes):
            if axis is None:
                continue
            if array.ndim <= axis:
                return f"input {position} has shape {array.shape}; its axis {axis} varies in length"
            length = array.shape[axis]
            if length > self.limit:
                return (
                    f"input {position} has length {length} along axis {axis}; the longest accepted is "
                    f"{self.limit}. Hint: shorten it, or raise Padding(max_length=...) (or its buckets)"
                )
            if length == 0:
                return f"input {position} has length 0 along axis {axis}; it needs at least 1"
        return None

    def key(self, arrays: Sequence[np.ndarray]) -> Hashable:
        """The batch key of a checked instance: dtype and shape of each input, with each
        padded axis at its length bucket (instances of one bucket share a batch)."""
        parts = []
        for array, axis in zip(arrays, self.caller_axes):
            shape = array.shape
            if axis is not None:
                shape = (*shape[:axis], self.bucket_for(shape[axis]), *shape[axis + 1 :])
            parts.append((array.dtype, shape))
        return tuple(parts)

    def instance_lengths(self, batch: Sequence[Sequence[np.ndarray]]) -> dict[int, list[int]]:
        """Each padded input's length in every instance of ``batch``."""
        return {
            position: [arrays[index].shape[axis] for arrays in batch]
            for index, (position, axis) in enumerate(zip(self.callers, self.caller_axes))
            if axis is not None
        }

    def stack(
        self, batch: Sequence[Sequence[np.ndarray]], pad_to: int | None = None
    ) -> tuple[tuple[np.ndarray, ...], dict[int, list[int]]]:
        """The model's inputs for ``batch``: padded inputs padded along their axis to their
        bucket, masks and lengths filled in, and rows added up to ``pad_to`` (copies of the
        first); with each padded input's instance lengths."""
        count = len(batch)
        rows = count if pad_to is None else pad_to
        lengths = self.instance_lengths(batch)
        buckets = {p: self.bucket_for(max(n)) for p, n in lengths.items()}
        inputs: dict[int, np.ndarray] = {}
        for index, position in enumerate(self.callers):
            parts = [arrays[index] for arrays in batch]
            axis = self.axes.get(position)
            if axis is None:
                inputs[position] = np.array(parts + [parts[0]] * (rows - count))
                continue
            first = parts[0]
            shape = (*first.shape[:axis], buckets[position], *first.shape[axis + 1 :])
            out = np.full((rows, *shape), self.values.get(position, 0), dtype=first.dtype)
            lead: tuple[slice, ...] = (slice(None),) * axis
            for row, part in enumerate(parts):
                where: tuple[int | slice, ...] = (row, *lead, slice(0, part.shape[axis]))
                out[where] = part
            if rows > count:
                out[count:] = out[0]
            inputs[position] = out
        own = {p: n + [n[0]] * (rows - count) for p, n in lengths.items()}
        for position, source in self.masks.items():
            mask = np.zeros((rows, buckets[source]), dtype=self.dtypes[position])
            for row, n in enumerate(own[source]):
                mask[row, :n] = 1
            inputs[position] = mask
        for position, source in self.lengths.items():
            inputs[position] = np.asarray(own[source], dtype=self.dtypes[position])
        return tuple(inputs[p] for p in range(self.n_inputs)), lengths

    def unstack(
        self, outputs: Sequence[np.ndarray], rows: int, lengths: Mapping[int, list[int]]
    ) -> list[tuple] | str:
        """Each instance's outputs: its row, the outputs that follow a padded axis sliced
        to its own length; a message when an output does not have the expected shape."""
        count = len(next(iter(lengths.values())))
        sliced = _batching.unstack(outputs, rows, count)
        if isinstance(sliced, str) or not self.outputs:
            return sliced
        for output, (position, axis) in self.outputs.items():
            if output >= len(outputs):
                continue  # the count of outputs is checked elsewhere
            array = outputs[output]
            bucket = self.bucket_for(max(lengths[position]))
            if array.ndim <= axis + 1 or array.shape[axis + 1] != bucket:
                return (
                    f"model output {output} has shape {array.shape}; declared to follow input {position}'s "
                    f"length along its axis {axis}, it should have length {bucket} there"
                )
        cut = [(o, p, (slice(None),) * a) for o, (p, a) in self.outputs.items() if o < len(outputs)]
        result = []
        for row, instance in enumerate(sliced):
            items = list(instance)
            for output, position, lead in cut:
                own: tuple[slice, ...] = (*lead, slice(0, lengths[position][row]))
                items[output] = items[output][own]
            result.append(tuple(items))
        return result

    def elements(self, batch: Sequence[Sequence[np.ndarray]]) -> tuple[int, int]:
        """Elements of the padded inputs of ``batch``'s instances: their own, and as run once
        padded to the length bucket. The length padding of real instances is the waste this
        counts; the rows added to reach a batch bucket are counted apart, as the batch's
        ``padding`` (instances), not here."""
        real = padded = 0
        for index, axis in enumerate(self.caller_axes):
            if axis is None:
                continue
            sizes = [arrays[index].size for arrays in batch]
            longest = max(arrays[index].shape[axis] for arrays in batch)
            first = batch[0][index]
            per_row = first.size // first.shape[axis] * self.bucket_for(longest) if first.shape[axis] else 0
            real += sum(sizes)
            padded += per_row * len(batch)
        return real, padded

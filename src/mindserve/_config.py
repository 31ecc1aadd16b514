"""The options users set, as frozen attrs classes validated where they are built: how a
model batches (:class:`Batching`), and how many worker processes a servable runs in
(:class:`WorkerPlan`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Union

import attrs

from mindserve._errors import ArgumentTypeError, DefinitionError, InvalidArgumentError, is_int


def _positive(name: str, allow_none: bool = False):  # type: ignore[no-untyped-def]
    def check(instance: object, attribute: object, value: object) -> None:
        if value is None and allow_none:
            return
        if not is_int(value, 1):
            raise DefinitionError(
                f"{type(instance).__name__} {name} must be an int >= 1{' or None' if allow_none else ''}; got {value!r}"
            )

    return check


def _non_negative_seconds(name: str):  # type: ignore[no-untyped-def]
    def check(instance: object, attribute: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise DefinitionError(f"Batching {name} must be a finite number of seconds >= 0; got {value!r}")

    return check


def _flag(instance: object, attribute: attrs.Attribute, value: object) -> None:  # type: ignore[type-arg]
    if not isinstance(value, bool):
        raise DefinitionError(
            f"{type(instance).__name__} {attribute.name} must be True or False; got {value!r}"
        )


def _buckets(value: Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = tuple(value)
    if not items or any(not is_int(b, 1) for b in items):
        raise DefinitionError(f"Batching buckets must be batch sizes (ints >= 1); got {value!r}")
    return tuple(sorted(set(items)))


@attrs.frozen
class Batching:
    """How one model batches instances across all callers.

    ``max_batch_size``: the most instances in one call (default: the batch size a model
    was exported with, else 64). ``max_delay``: seconds the executor may wait for more
    instances once a batch has started forming (default 0: never wait; instances that
    arrive while the model is busy form the next batch). ``refill_wait``: seconds the
    executor may wait, after a batch of n instances, for n instances to queue again before
    it runs a smaller batch (default 0.002): under steady load the callers of the last
    batch come back together, and a model run while they are still being woken runs
    slower on a small machine. A lone caller never waits for it (a batch of 1 is never
    waited for), and 0 turns it off. ``max_queue``: the most
    instances waiting for the model; beyond it calls fail with ``OverloadedError``.
    ``buckets``: the batch sizes a model taking any batch size is fed (each batch is
    padded up to one), so MindSpore compiles few shapes; default: powers of two up to
    ``max_batch_size``. ``warm_up``: run every bucket once at load, so no request pays a compile
    (``False``: run only one batch of 1, to check the outputs). ``prune_buckets``: also time
    each bucket at load and keep only those that run faster than every larger one (fewer
    buckets, less padding waste, but which buckets survive depends on the machine's load).
    """

    max_batch_size: int | None = attrs.field(default=None, validator=_positive("max_batch_size", True))
    max_delay: float = attrs.field(default=0.0, validator=_non_negative_seconds("max_delay"))
    refill_wait: float = attrs.field(default=0.002, validator=_non_negative_seconds("refill_wait"))
    max_queue: int = attrs.field(default=4096, validator=_positive("max_queue"))
    buckets: tuple[int, ...] | None = attrs.field(default=None, converter=_buckets)
    warm_up: bool = attrs.field(default=True, validator=_flag)
    prune_buckets: bool = attrs.field(default=False, validator=_flag)

    def __attrs_post_init__(self) -> None:
        if (
            self.buckets is not None
            and self.max_batch_size is not None
            and self.buckets[-1] != self.max_batch_size
        ):
            raise DefinitionError(
                f"Batching buckets must end at max_batch_size, the largest batch; got "
                f"buckets={self.buckets} with max_batch_size={self.max_batch_size}. Hint: give "
                f"one of the two, or make the largest bucket max_batch_size."
            )


#: Where a worker process's output goes: a file name pattern (``{servable}``, ``{version}``,
#: ``{index}``, ``{device_id}``) or a function of the same keywords returning one.
WorkerOutput = Union[str, Callable[..., str]]


@attrs.frozen
class WorkerPlan:
    """How many worker processes a servable runs in, on which device ids, and where each
    one's standard output and error go (``None``: this process's)."""

    device_ids: tuple[int, ...]
    output: WorkerOutput | None = None

    def output_file(self, servable: str, version: int, index: int, device_id: int) -> str | None:
        """The file worker ``index`` writes its output to, if the plan names one."""
        if self.output is None:
            return None
        names = {"servable": servable, "version": version, "index": index, "device_id": device_id}
        path = self.output(**names) if callable(self.output) else self.output.format(**names)
        if not isinstance(path, str):
            raise InvalidArgumentError(f"worker_output must give a file name (a str); it gave {path!r}")
        return path

    @classmethod
    def from_arguments(
        cls, workers: Any, device_ids: Any, default_device_id: int, output: Any = None
    ) -> WorkerPlan | None:
        """The plan for ``start(workers=..., device_ids=..., worker_output=...)``; ``None``:
        in this process."""
        if output is not None:
            _check_output(output)
        plan = cls._devices(workers, device_ids, default_device_id)
        if plan is None:
            if output is not None:
                raise InvalidArgumentError(
                    "worker_output names where worker processes write, and this servable runs in "
                    "this process. Hint: give workers=N or device_ids too, or leave worker_output out"
                )
            return None
        return attrs.evolve(plan, output=output)

    @classmethod
    def _devices(cls, workers: Any, device_ids: Any, default_device_id: int) -> WorkerPlan | None:
        if workers is not None and not is_int(workers, 0):
            raise InvalidArgumentError(
                f"workers must be an int >= 0 (0 or None: in this process); got {workers!r}"
            )
        if device_ids is None:
            return cls((default_device_id,) * workers) if workers else None
        if is_int(device_ids):
            device_ids = [device_ids]
        if (
            isinstance(device_ids, (str, bytes))
            or not isinstance(device_ids, Sequence)
            or not device_ids
            or any(not is_int(i, 0) for i in device_ids)
        ):
            raise InvalidArgumentError(
                f"device_ids must be a non-empty list of ints >= 0; got {device_ids!r}"
            )
        if workers not in (None, 0, len(device_ids)):
            raise InvalidArgumentError(
                f"workers={workers} and device_ids={list(device_ids)} disagree: one worker runs per "
                f"device id. Hint: give one of the two."
            )
        return cls(tuple(device_ids))

    @property
    def size(self) -> int:
        return len(self.device_ids)


def _check_output(output: Any) -> None:
    """A ``worker_output`` pattern must name only the fields a worker has."""
    if callable(output):
        return
    if not isinstance(output, str) or not output:
        raise ArgumentTypeError(
            f"worker_output must be a file name pattern (a str) or a function returning one; got {output!r}"
        )
    try:
        output.format(servable="s", version=1, index=0, device_id=0)
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidArgumentError(
            f"worker_output {output!r} is no pattern of {{servable}}, {{version}}, {{index}} and "
            f"{{device_id}}: {type(exc).__name__}: {exc}"
        ) from None


def _positions(name: str, value: Any, *, values: str = "int") -> dict[int, Any] | None:
    """A mapping of model input (or output) positions, checked; ``None`` stays ``None``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or any(not is_int(k, 0) for k in value):
        raise DefinitionError(f"Padding {name} must be a dict keyed by positions (ints >= 0); got {value!r}")
    checked: dict[int, Any] = {}
    for key, item in value.items():
        if values == "int" and not is_int(item, 0):
            raise DefinitionError(f"Padding {name}[{key}] must be an int >= 0; got {item!r}")
        if values == "axis" and not (
            is_int(item, 0)
            or (isinstance(item, tuple) and len(item) == 2 and all(is_int(i, 0) for i in item))
        ):
            raise DefinitionError(
                f"Padding {name}[{key}] must be an instance axis (int >= 0) or (input, axis); got {item!r}"
            )
        if values == "number" and (isinstance(item, bool) or not isinstance(item, (int, float))):
            raise DefinitionError(f"Padding {name}[{key}] must be a number; got {item!r}")
        checked[int(key)] = item
    return checked


def _length_buckets(value: Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = tuple(value) if not isinstance(value, (str, bytes)) else ()
    if not items or any(not is_int(b, 1) for b in items):
        raise DefinitionError(f"Padding buckets must be lengths (ints >= 1); got {value!r}")
    return tuple(sorted(set(items)))


def _pad_value(value: Any) -> float | dict[int, Any]:
    if isinstance(value, Mapping):
        return _positions("value", value, values="number") or {}
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DefinitionError(f"Padding value must be a number or a dict of input -> number; got {value!r}")
    return value


@attrs.frozen
class Padding:
    """How a model's variable-length inputs are padded, so that instances of different
    lengths share a batch (see docs/batching.md, "Variable-length inputs").

    Positions are the model's own input and output positions (0-based).

    ``inputs``: ``{input: axis}``, the axis of one instance (batch dimension excluded) whose
    length varies; default: the first dynamic non-batch axis of each input the MindIR file
    reports (``Tensor(shape=[None, None])``). ``buckets``: the lengths a batch is padded to
    (ascending); default: 8, 12, 16, 24, 32, 48, ... up to ``max_length`` (each at most
    1.5x the one below). ``max_length``: the longest instance accepted (default: the
    largest bucket, else 512); longer instances fail alone with ``InvalidInputError``. ``value``: the pad value, one number or ``{input: number}``
    (default 0). ``mask``: ``{mask_input: padded_input}``, inputs mindserve fills in (callers
    do not send them) with 1 at an instance's own positions and 0 on padding. ``lengths``:
    ``{lengths_input: padded_input}``, inputs mindserve fills with each instance's length.
    ``outputs``: ``{output: axis}`` (or ``{output: (input, axis)}``), outputs whose instance
    axis follows a padded input's length (the first padded input unless named): each
    instance gets its own length back; other outputs are returned as they are.
    ``enabled=False`` turns padding off (each length is its own batch and its own compile),
    also the load-time probe of undeclared dynamic inputs.
    """

    inputs: dict[int, int] | None = attrs.field(default=None, converter=lambda v: _positions("inputs", v))
    buckets: tuple[int, ...] | None = attrs.field(default=None, converter=_length_buckets)
    max_length: int | None = attrs.field(default=None, validator=_positive("max_length", True))
    value: float | dict[int, Any] = attrs.field(default=0, converter=_pad_value)
    mask: dict[int, int] | None = attrs.field(default=None, converter=lambda v: _positions("mask", v))
    lengths: dict[int, int] | None = attrs.field(default=None, converter=lambda v: _positions("lengths", v))
    outputs: dict[int, Any] | None = attrs.field(
        default=None, converter=lambda v: _positions("outputs", v, values="axis")
    )
    enabled: bool = attrs.field(default=True, validator=_flag)

    def __attrs_post_init__(self) -> None:
        if self.buckets is not None and self.max_length is not None and self.buckets[-1] != self.max_length:
            raise DefinitionError(
                f"Padding buckets must end at max_length, the longest instance; got buckets={self.buckets} "
                f"with max_length={self.max_length}. Hint: give one of the two."
            )
        filled = [*(self.mask or {}), *(self.lengths or {})]
        if len(filled) != len(set(filled)):
            raise DefinitionError(
                f"Padding: an input is named twice among mask and lengths: {sorted(filled)}"
            )
        clash = set(filled) & set(self.inputs or {})
        if clash:
            raise DefinitionError(
                f"Padding: input(s) {sorted(clash)} are filled in by mindserve (mask or lengths), so they "
                f"cannot also be padded inputs"
            )
        if self.inputs is not None:
            for name, mapping in (("mask", self.mask), ("lengths", self.lengths)):
                stray = {k: v for k, v in (mapping or {}).items() if v not in self.inputs}
                if stray:
                    raise DefinitionError(
                        f"Padding {name}={stray} names input(s) that are not padded; padded inputs: "
                        f"{sorted(self.inputs)}"
                    )

    @property
    def filled(self) -> tuple[int, ...]:
        """The model inputs mindserve fills in (masks and lengths), which callers do not send."""
        return tuple(sorted({*(self.mask or {}), *(self.lengths or {})}))

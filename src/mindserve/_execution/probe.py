"""The load-time probe: may a model whose inputs have dynamic non-batch dimensions be padded?

A MindIR file exported with ``Tensor(shape=[None, None])`` takes any length, and every new
length costs a graph compile. Padding instances to a few length buckets bounds the
compiles, but only a model that ignores padding gives the same answers padded. When the
model declares nothing (no :class:`~mindserve.Padding`), :func:`probe` runs one instance
of random values unpadded and padded (zeros after it, along each dynamic axis) and
compares the outputs on the instance's own positions: padding is used only if no output
changed (within float tolerance). A model that pools or attends over its whole input fails
and keeps one batch per exact shape; a warning says so, and how to declare padding.
"""

from __future__ import annotations

import logging

import numpy as np

from mindserve._batching.lengths import DEFAULT_MAX_LENGTH, Lengths, length_buckets
from mindserve._execution.executor import Executor, run_batch
from mindserve._execution.padding import dynamic_axes
from mindserve._execution.plan import Finding, ModelPlan
from mindserve._observe.visible import warn_definition
from mindserve._outcomes import Failure

logger = logging.getLogger("mindserve")

#: The probe instance's length, and the length it is padded to.
PROBE_LENGTH = 5
PROBE_PADDED = 8
#: How close padded and unpadded outputs must be (float rounding differs across shapes).
RTOL, ATOL = 1e-4, 1e-5

_HINT = (
    "Hint: declare how the model ignores padding, svc.model(..., padding=mindserve.Padding(mask={mask_input: "
    "padded_input}) or Padding(lengths={...})), or padding=Padding(enabled=False) to keep exact shapes "
    "without this probe (see docs/batching.md)."
)


def probe(plan: ModelPlan, executor: Executor, declared: bool) -> ModelPlan:
    """``plan``, padding its dynamic inputs if a probe shows that changes no answer (only for a
    model that declares no padding, has input specs and dynamic non-batch dimensions).

    Nothing is logged here: the plan carries what the probe found (:attr:`ModelPlan.probed`),
    for :func:`tell` to say once where the model's queue is (a worker process probes; its
    main process tells)."""
    specs = plan.instance_specs
    if (
        declared
        or plan.reshape_inputs  # mindserve.compat: batch as MindSpore Serving did, by exact shape
        or plan.lengths is not None
        or specs is None
        or not plan.with_batch_dim
        or plan.unbatched
        or any(s is None or s.dtype is None for s in specs)
    ):
        return plan
    axes = dynamic_axes(specs)
    if not axes:
        return plan
    what = f"{plan.where}: model '{plan.name}'"
    several = [p for p in axes if specs[p].shape.count(None) > 1]  # type: ignore[union-attr]
    if several:
        return plan.with_lengths(
            None,
            Finding(
                logging.WARNING,
                "%s: input(s) %s have several dynamic non-batch dimensions, so each shape runs as its own batch "
                "and compiles its own graph. %s",
                (what, several, _HINT),
            ),
        )
    outputs = _padding_is_safe(plan, executor, axes)
    if isinstance(outputs, str):
        return plan.with_lengths(
            None,
            Finding(
                logging.WARNING,
                "%s: input(s) %s have a dynamic non-batch dimension, but padding changed %s in a load-time probe, "
                "so each length runs as its own batch and compiles its own graph. %s",
                (what, sorted(axes), outputs, _HINT),
            ),
        )
    lengths = _lengths(plan, axes, outputs, length_buckets(DEFAULT_MAX_LENGTH))
    return plan.with_lengths(
        lengths,
        Finding(
            logging.INFO,
            "%s: padding input(s) %s to length buckets %s (a load-time probe found it changes no output; outputs "
            "%s follow the length); longer instances are refused. Declare padding=mindserve.Padding(...) to "
            "choose.",
            (what, sorted(axes), list(lengths.buckets), sorted(outputs)),
        ),
    )


def tell(plan: ModelPlan) -> None:
    """Say what the load-time probe found for ``plan`` (a warning when it cannot pad: see
    :func:`~mindserve._observe.visible.warn_definition`); nothing if it did not run."""
    found = plan.probed
    if found is None:
        return
    if found.level >= logging.WARNING:
        warn_definition(logger, found.message, *found.args)
    else:
        logger.log(found.level, found.message, *found.args)


def _lengths(
    plan: ModelPlan, axes: dict[int, int], outputs: dict[int, int], buckets: tuple[int, ...]
) -> Lengths:
    first = min(axes)
    return Lengths(
        axes=axes,
        buckets=buckets,
        values=dict.fromkeys(axes, 0),
        masks={},
        lengths={},
        outputs={o: (first, axis) for o, axis in outputs.items()},
        n_inputs=len(plan.instance_specs or ()),
        dtypes={},
        source="probe",
    )


def _instance(plan: ModelPlan, rng: np.random.Generator, sign: int) -> tuple[np.ndarray, ...]:
    """A probe instance of random values at :data:`PROBE_LENGTH` (floats of any sign, or all
    positive, or all negative: a max or min over the length fails one of them)."""
    arrays = []
    for spec in plan.instance_specs or ():
        assert spec is not None and spec.dtype is not None
        shape = tuple(PROBE_LENGTH if d is None else d for d in spec.shape)
        if spec.dtype.kind == "f":
            values = rng.normal(size=shape)
            if sign:
                values = sign * (np.abs(values) + 1)
            arrays.append(values.astype(spec.dtype))
        elif spec.dtype.kind == "b":
            arrays.append(np.ones(shape, spec.dtype))
        else:  # token ids: small, non-zero (zero is the pad value)
            arrays.append(rng.integers(1, 4, size=shape).astype(spec.dtype))
    return tuple(arrays)


def _padding_is_safe(plan: ModelPlan, executor: Executor, axes: dict[int, int]) -> dict[int, int] | str:
    """The outputs that follow the padded length (output -> axis of one instance's output), if
    padded runs gave the same answers as unpadded ones; else what changed."""
    rng = np.random.default_rng(0)
    instances = [_instance(plan, rng, sign) for sign in (0, 1, -1)]
    exact = run_batch(plan, executor, instances)
    if isinstance(exact, Failure):
        return f"nothing (the unpadded probe run failed: {exact.detail})"
    padded = run_batch(plan.with_lengths(_lengths(plan, axes, {}, (PROBE_PADDED,))), executor, instances)
    if isinstance(padded, Failure):
        return f"nothing (the padded probe run failed: {padded.detail})"
    follows: dict[int, int] = {}
    for alone, grown in zip(exact, padded):
        assert not isinstance(alone, Failure) and not isinstance(grown, Failure)  # a batch fails whole
        for output, (want, got) in enumerate(zip(alone, grown)):
            if want.shape != got.shape:
                longer = [
                    a
                    for a in range(want.ndim)
                    if got.ndim == want.ndim
                    and want.shape[a] == PROBE_LENGTH
                    and got.shape[a] == PROBE_PADDED
                ]
                same_rest = got.ndim == want.ndim and all(
                    want.shape[a] == got.shape[a] for a in range(want.ndim) if a not in longer
                )
                if len(longer) != 1 or not same_rest or follows.get(output, longer[0]) != longer[0]:
                    return f"output {output}'s shape ({want.shape} unpadded, {got.shape} padded)"
                follows[output] = longer[0]
                got = got[(slice(None),) * longer[0] + (slice(0, PROBE_LENGTH),)]
            if not np.allclose(want, got, rtol=RTOL, atol=ATOL):
                return f"output {output}"
    return follows

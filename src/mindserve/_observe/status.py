"""Read-only records describing what a runtime is running (see :meth:`Runtime.status`)."""

from __future__ import annotations

import datetime

import attrs

from mindserve._config import Batching
from mindserve._values import TensorSpec


@attrs.frozen
class ModelInfo:
    """A loaded model: its kind (``mindir``, ``cell``, ``callable``), source and batching."""

    name: str
    kind: str
    source: str
    with_batch_dim: bool
    #: The batch size it was exported with, or ``None`` when it takes any batch size.
    fixed_batch_size: int | None
    #: Its input specs, when the model file records them.
    inputs: tuple[TensorSpec, ...] | None
    #: The batching in effect: max batch size, buckets (after pruning, if asked for), ...
    batching: Batching
    #: The batch sizes run once at load (compiled before the first request).
    warmed_up: tuple[int, ...]
    #: Batches run, and instances in them, since the model loaded.
    batches: int
    instances: int
    #: The length buckets its variable-length inputs are padded to (``None``: not padded;
    #: see :class:`~mindserve.Padding`).
    lengths: tuple[int, ...] | None = None
    #: How many graphs MindSpore compiled for it (one per distinct input shapes run, the
    #: warm-up's included; in worker processes, a shape counts once though each worker
    #: that runs it compiles it); ``None`` for a callable.
    graphs: int | None = None

    @property
    def mean_batch_size(self) -> float:
        """Instances per batch since the model loaded (0 before the first batch)."""
        return self.instances / self.batches if self.batches else 0.0


@attrs.frozen
class MethodInfo:
    """A method: its input and output names."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@attrs.frozen
class WorkerInfo:
    """One worker process of a servable version (see :meth:`Runtime.servable_status`)."""

    #: Its position in the pool (0, 1, ...): a restarted worker keeps it.
    index: int
    #: The current process id, or ``None`` while none runs.
    pid: int | None
    device_id: int
    #: ``"starting"``, ``"ready"``, ``"restarting"``, ``"failed"`` (given up) or ``"stopped"``.
    state: str
    #: Whether it runs a batch now.
    busy: bool
    #: How many times it was restarted after dying.
    restarts: int
    #: Batches (of models and batched stages) it ran.
    batches: int
    #: Seconds it spent running them.
    run_seconds: float
    #: Seconds spent moving batches to it and results back (round trip minus the run).
    transfer_seconds: float
    #: Why it last died or failed to start, or ``None``.
    last_error: str | None


@attrs.frozen
class ServableInfo:
    """One running version of a servable."""

    name: str
    version: int
    directory: str | None
    #: The MindSpore device (``"CPU:0"``), or ``None`` when no MindSpore model is loaded.
    device: str | None
    loaded_at: datetime.datetime
    #: Whether ``version=0`` calls go to this version (the newest running one).
    is_default: bool
    methods: tuple[MethodInfo, ...]
    models: tuple[ModelInfo, ...]
    #: Its worker processes (empty when it runs in this process).
    workers: tuple[WorkerInfo, ...] = ()

    def __repr__(self) -> str:
        # One line: the methods', models' and workers' records are read from the fields.
        return (
            f"ServableInfo(name={self.name!r}, version={self.version}, is_default={self.is_default}, "
            f"device={self.device!r}, {_count(self.methods, 'method')}, {_count(self.models, 'model')}, "
            f"{_count(self.workers, 'worker')})"
        )


def _count(items: tuple[object, ...], noun: str) -> str:
    return f"{len(items)} {noun}" if len(items) == 1 else f"{len(items)} {noun}s"


@attrs.frozen
class ServableStatus:
    """One servable name: its running versions, which is the default, and its last failure."""

    name: str
    #: The version that ``version=0`` calls go to (the newest running), or None.
    default_version: int | None
    versions: tuple[ServableInfo, ...]
    #: Whether the runtime watches the servable's directory for new versions.
    watching: bool
    #: The last error of an update or a watched version that failed to load, if any.
    last_error: BaseException | None
    last_error_version: int | None
    last_error_at: datetime.datetime | None

    @property
    def workers(self) -> tuple[WorkerInfo, ...]:
        """The worker processes of the default version (empty when it runs in this process)."""
        for info in self.versions:
            if info.is_default:
                return info.workers
        return ()

"""Read-only records describing what a runtime is running (see :meth:`Runtime.status`)."""

from __future__ import annotations

import datetime
from typing import Optional, Tuple

import attrs

from mindserve._specs import TensorSpec


@attrs.frozen
class ModelInfo:
    """A loaded model: its kind (``mindir``, ``cell``, ``callable``), source and batching."""

    name: str
    kind: str
    source: str
    with_batch_dim: bool
    #: The batch size it was exported with, or ``None`` when it takes any batch size.
    fixed_batch_size: Optional[int]
    #: Its input specs, when the model file records them.
    inputs: Optional[Tuple[TensorSpec, ...]]


@attrs.frozen
class MethodInfo:
    """A method: its input and output names."""

    name: str
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]


@attrs.frozen
class ServableInfo:
    """One running version of a servable."""

    name: str
    version: int
    directory: Optional[str]
    #: The MindSpore device (``"CPU:0"``), or ``None`` when no MindSpore model is loaded.
    device: Optional[str]
    loaded_at: datetime.datetime
    methods: Tuple[MethodInfo, ...]
    models: Tuple[ModelInfo, ...]

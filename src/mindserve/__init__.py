"""mindserve: serve MindSpore models from inside a Python program.

Define a servable with decorators, start it in a :class:`Runtime`, call its methods::

    svc = mindserve.Servable("mlp", directory="models/mlp")
    mlp = svc.model("mlp.mindir")

    @svc.method(outputs=["logits"])
    def predict(x):
        return mlp(x)

    with mindserve.Runtime() as rt:
        rt.start(svc)
        rt.infer("mlp", "predict", [{"x": x}])

Importing mindserve does not import MindSpore; that happens when a model first loads.
"""

import logging as _logging
import sys as _sys
import warnings as _warnings

from mindserve._config import Batching, Padding
from mindserve._define.method import Method
from mindserve._define.model import Model
from mindserve._define.servable import Servable
from mindserve._define.stage import Stage
from mindserve._errors import (
    ArgumentTypeError,
    CallError,
    DeadlineExceededError,
    DefinitionError,
    DeviceError,
    ExtraUnavailableError,
    InferenceError,
    InstanceError,
    InvalidArgumentError,
    InvalidInputError,
    LoadError,
    MethodNotFoundError,
    MindServeError,
    MindServeWarning,
    MindSporeUnavailableError,
    MindSporeVersionWarning,
    ModelError,
    NotFoundError,
    OverloadedError,
    RuntimeClosedError,
    RuntimeNotClosedWarning,
    ServableNotFoundError,
    StageError,
    VersionNotFoundError,
    WorkerError,
)
from mindserve._execution.mindspore import mindspore_lock
from mindserve._heap import freeze_gc
from mindserve._observe.observer import (
    BatchReason,
    BatchReport,
    CallReport,
    DropReason,
    DropReport,
    EventKind,
    Observer,
    Outcome,
    Step,
    VersionEvent,
    WarmUpReport,
)
from mindserve._observe.snapshot import Histogram, MethodMetrics, Metrics, ModelMetrics, ServableMetrics
from mindserve._observe.status import MethodInfo, ModelInfo, ServableInfo, ServableStatus, WorkerInfo
from mindserve._requirements import MINDSPORE_REQUIREMENT, TESTED_MINDSPORE_VERSIONS
from mindserve._runtime import Runtime
from mindserve._values import TensorSpec
from mindserve._version import __version__

# A library logs nothing unless the application configures logging (not even through
# Python's last-resort handler, which would print a failed load on top of its exception).
_logging.getLogger("mindserve").addHandler(_logging.NullHandler())
# A runtime dropped without close() held threads and models: say so, though Python hides
# other ResourceWarnings by default; unless the interpreter was given -W or PYTHONWARNINGS
# (filters the application adds later take precedence anyway).
if not _sys.warnoptions:
    _warnings.filterwarnings("default", category=RuntimeNotClosedWarning)

__all__ = [
    "MINDSPORE_REQUIREMENT",
    "TESTED_MINDSPORE_VERSIONS",
    "ArgumentTypeError",
    "BatchReason",
    "BatchReport",
    "Batching",
    "CallError",
    "CallReport",
    "DeadlineExceededError",
    "DefinitionError",
    "DeviceError",
    "DropReason",
    "DropReport",
    "EventKind",
    "ExtraUnavailableError",
    "Histogram",
    "InferenceError",
    "InstanceError",
    "InvalidArgumentError",
    "InvalidInputError",
    "LoadError",
    "Method",
    "MethodInfo",
    "MethodMetrics",
    "MethodNotFoundError",
    "Metrics",
    "MindServeError",
    "MindServeWarning",
    "MindSporeUnavailableError",
    "MindSporeVersionWarning",
    "Model",
    "ModelError",
    "ModelInfo",
    "ModelMetrics",
    "NotFoundError",
    "Observer",
    "Outcome",
    "OverloadedError",
    "Padding",
    "Runtime",
    "RuntimeClosedError",
    "RuntimeNotClosedWarning",
    "Servable",
    "ServableInfo",
    "ServableMetrics",
    "ServableNotFoundError",
    "ServableStatus",
    "Stage",
    "StageError",
    "Step",
    "TensorSpec",
    "VersionEvent",
    "VersionNotFoundError",
    "WarmUpReport",
    "WorkerError",
    "WorkerInfo",
    "__version__",
    "freeze_gc",
    "mindspore_lock",
]


# Tracebacks and reprs name the public home of each class (mindserve.InvalidInputError),
# not the private module that defines it.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type) and _value.__module__.startswith("mindserve._"):
        _value.__module__ = __name__
del _name, _value

"""MindSpore Serving 2.0's ``mindspore_serving.server.register``, on mindserve.

While :func:`mindserve.compat.load_servable` imports a ``servable_config.py``, the modules
``mindspore_serving.server.register`` (and its parents) resolve to this one. Each call
here builds the equivalent native definition on a :class:`mindserve.Servable`:
``declare_model`` -> :meth:`Servable.model`, ``register_method`` -> :meth:`Servable.method`,
``add_stage`` -> a recorded stage or model step.

Semantics follow MindSpore Serving 2.0: a batch function (``batch_size`` 0 or k) receives a
list of instances, each a tuple of its inputs, and returns or yields one result per
instance; a model input is accepted when its dtype and element count match the model
(it is reshaped), as MindSpore Serving checks byte size and dtype, not shape.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
import types
from collections.abc import Iterator, Sequence
from typing import Any, Callable

from mindserve._context import current_step
from mindserve._define.method import build_method
from mindserve._define.model import Model as NativeModel
from mindserve._define.servable import Servable
from mindserve._define.stage import Stage
from mindserve._define.tracing import Placeholder, active_trace
from mindserve._errors import DefinitionError, MindServeError, is_int
from mindserve.compat._checks import check_str, str_list
from mindserve.compat._device_context import (
    AclOptions,
    AscendDeviceInfo,
    Context,
    CPUDeviceInfo,
    GPUDeviceInfo,
    GpuOptions,
)
from mindserve.compat._legacy import legacy_meta, legacy_outputs
from mindserve.compat._stage_adapters import batch_adapter, instance_adapter, worded

logger = logging.getLogger("mindserve.compat")

__all__ = [
    "AclOptions",
    "AscendDeviceInfo",
    "CPUDeviceInfo",
    "Context",
    "GPUDeviceInfo",
    "GpuOptions",
    "Model",
    "add_stage",
    "call_postprocess",
    "call_postprocess_pipeline",
    "call_preprocess",
    "call_preprocess_pipeline",
    "call_servable",
    "declare_model",
    "declare_servable",
    "register_method",
]


class _Loading:
    """The servable whose servable_config.py is being imported."""

    def __init__(self, servable: Servable, dec_key: bytes | None, dec_mode: str) -> None:
        self.servable = servable
        self.dec_key = dec_key
        self.dec_mode = dec_mode
        self.models: list[Model] = []
        self.files: set[str] = set()
        #: Stages added so far in each method (MindSpore Serving numbers them from 1).
        self.stage_counts: dict[str, int] = {}
        #: Each stage function's first use: inputs count, outputs count, with batch_size.
        self.uses: dict[Any, tuple[int, int, bool]] = {}
        #: For the legacy call_* functions: outputs counts read from the method's source.
        self.legacy: dict[str, int] = {}
        self.legacy_called: set[str] = set()


_lock = threading.RLock()
_current: _Loading | None = None


@contextlib.contextmanager
def _declaring(servable: Servable, dec_key: bytes | None, dec_mode: str) -> Iterator[None]:
    """While a servable_config.py is imported (one at a time): the register calls it makes
    declare on ``servable``."""
    global _current
    with _lock:
        _current = _Loading(servable, dec_key, dec_mode)
        try:
            yield
        finally:
            _current = None


def _loading(what: str) -> _Loading:
    if _current is None:
        raise DefinitionError(
            f"register.{what} can only be used in a servable_config.py loaded by "
            f"mindserve.compat.load_servable (or mindserve.compat.server.start_servables)"
        )
    return _current


# -- device contexts and options: readable, checked, not applied (see _device_context) ----

# -- models ------------------------------------------------------------------------------


class Model:
    """A declared model (several files are several subgraphs), as ``declare_model`` returns."""

    def __init__(self, model_key: str, subgraphs: list[NativeModel] | None = None) -> None:
        self.model_key = model_key
        #: None for a handle built by key (``register.model.Model("x.mindir")``, as MindSpore
        #: Serving allows): the declared model of that key is looked up when it is called.
        self.subgraphs = subgraphs

    def __repr__(self) -> str:
        return f"Model({self.model_key!r})"

    def call(self, *args: Any, subgraph: int = 0) -> Any:
        """Run the model from a stage: ``call(x1, x2)`` for one instance (its outputs),
        ``call([[x1, x2], (x3, x4)])`` for several (a list of output tuples). Failures raise
        ``RuntimeError`` in MindSpore Serving's words (``Model(<key>).call() failed: ...``)."""
        if not is_int(subgraph):
            raise RuntimeError(f"Parameter 'subgraph' should be int, but actually {type(subgraph)}")
        if subgraph < 0:
            raise RuntimeError("Parameter 'subgraph' should be >= 0")
        python_label = f"Model({self.model_key}{f' ,subgraph={subgraph}' if subgraph else ''}).call()"
        label = f"Model({self.model_key}{f', subgraph={subgraph}' if subgraph else ''}).call()"
        if not args:
            raise RuntimeError(
                f"{python_label} failed: no inputs provided, the inputs can be call(x1, x2) for single instance "
                f"or call([[x1, x2], [x1, x2]]) for multi instances."
            )
        several = len(args) == 1 and isinstance(args[0], (tuple, list))
        if several:
            if any(not isinstance(instance, (tuple, list)) for instance in args[0]):
                raise RuntimeError(
                    f"{python_label} failed: inputs format invalid, the inputs can be call(x1, x2) for single "
                    f"instance or  call([[x1, x2], [x1, x2]]) for multi instances."
                )
            instances = [tuple(instance) for instance in args[0]]
        else:
            instances = [tuple(args)]
        subgraphs = self.subgraphs if self.subgraphs is not None else _declared(self.model_key)
        if not subgraphs:
            raise RuntimeError(f"{python_label} failed: the model is not declared")
        if subgraph >= len(subgraphs):
            raise RuntimeError(
                f"{label} failed: The model does not have subgraph of index {subgraph}, the subgraph count of the "
                f"model is {len(subgraphs)}"
            )
        native = subgraphs[subgraph]
        if not instances:
            raise RuntimeError(f"{label} failed: Input instances count is 0")
        expected = _inputs_count(native)
        for index, instance in enumerate(instances):
            if expected is not None and len(instance) != expected:
                raise RuntimeError(
                    f"{label} failed: The inputs count {len(instance)} of instance {index} is not equal to the "
                    f"inputs count {expected} of the model"
                )
        try:
            outputs = native.call_many(instances)
        except MindServeError as exc:
            raise RuntimeError(f"{label} failed: {getattr(exc, 'detail', exc)}") from exc
        if several:
            return outputs
        return outputs[0][0] if len(outputs[0]) == 1 else outputs[0]


def _declared(model_key: str) -> list[NativeModel]:
    """The subgraphs of the running servable's model declared with ``model_key`` (none
    outside a stage, or when no model has that key)."""
    step = current_step()
    if step is None:
        return []
    models = step.loaded.models
    if model_key in models:
        return [models[model_key].model]
    found: list[NativeModel] = []
    while f"{model_key}#{len(found)}" in models:
        found.append(models[f"{model_key}#{len(found)}"].model)
    return found


def _inputs_count(native: NativeModel) -> int | None:
    """How many inputs the running version's copy of ``native`` takes (None if unknown)."""
    step = current_step()
    loaded = step.loaded.models.get(native.name) if step is not None else None
    return loaded.n_inputs if loaded is not None else native.inputs


def declare_model(
    model_file: str | Sequence[str],
    model_format: str,
    with_batch_dim: bool = True,
    options: Any = None,
    without_batch_dim_inputs: int | Sequence[int] | None = None,
    context: Any = None,
    config_file: str | None = None,
) -> Model:
    """Declare a model of the servable being loaded (a list of files: one model, several subgraphs)."""
    loading = _loading("declare_model")
    if not isinstance(with_batch_dim, bool):
        raise DefinitionError(
            f"Parameter 'with_batch_dim' should be bool, but actually {type(with_batch_dim)}"
        )
    files = str_list("model_file", model_file, DefinitionError)
    if not files:
        raise DefinitionError("Declare model failed, model files size cannot be 0")
    if not isinstance(model_format, str):
        raise DefinitionError(f"Parameter 'model_format' should be str, but actually {type(model_format)}")
    if model_format.lower() not in ("om", "mindir", "mindir_opt", "mindir_lite"):
        raise DefinitionError("model format can only be OM, MindIR or MindIR_Lite, case ignored")
    if model_format.lower() != "mindir":
        raise DefinitionError(
            f"model format {model_format} needs MindSpore Lite or Ascend ACL, which mindserve does not use; "
            f"export the model as MindIR"
        )
    if context is not None and not isinstance(context, Context):
        raise DefinitionError(f"Parameter 'context' should be Context, but gotten {type(context)}")
    if options is not None and not isinstance(options, (GpuOptions, AclOptions)):
        raise DefinitionError(
            f"Parameter 'options' should be None, GpuOptions or AclOptions, but gotten {type(options)}"
        )
    if config_file is not None and (not isinstance(config_file, str) or not config_file):
        raise DefinitionError(
            f"Parameter 'config_file' should be a non-empty str, but actually {config_file!r}"
        )
    for name in files:
        if name in loading.files:
            raise DefinitionError(
                f"Declare model [{', '.join(files)}] failed, model file '{name}' has already been used"
            )
        if os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == os.pardir:
            raise DefinitionError(
                f"model file '{name}' is outside the servable's version directory; a model file is "
                f"named relative to it and stays inside it"
            )
    if options is not None or context is not None or config_file is not None:
        logger.info(
            "servable '%s': declare_model options, context and config_file do not apply in-process; ignored",
            loading.servable.name,
        )
    key = ";".join(files)
    subgraphs = []
    for index, name in enumerate(files):
        native = loading.servable.model(
            name,
            name=key if len(files) == 1 else f"{key}#{index}",
            with_batch_dim=with_batch_dim,
            without_batch_dim_inputs=without_batch_dim_inputs,
            dec_key=loading.dec_key,
            dec_mode=loading.dec_mode,
        )
        native.reshape_inputs = True
        # As in MindSpore Serving, the output count comes from the model file; only a use
        # through add_stage (which registers outputs_count) checks it.
        native.outputs = None
        subgraphs.append(native)
    loading.files.update(files)
    model = Model(key, subgraphs)
    loading.models.append(model)
    return model


def declare_servable(
    servable_file: str | Sequence[str],
    model_format: str,
    with_batch_dim: bool = True,
    options: Any = None,
    without_batch_dim_inputs: int | Sequence[int] | None = None,
) -> Model:
    """Deprecated alias of :func:`declare_model` (as in MindSpore Serving)."""
    return declare_model(servable_file, model_format, with_batch_dim, options, without_batch_dim_inputs)


# -- methods and stages ------------------------------------------------------------------


def _stage_for(
    loading: _Loading,
    function: Callable[..., Any],
    inputs: int,
    outputs: int,
    batch_size: int | None,
    method: str,
    tag: str | None,
) -> Stage:
    """A native stage for one use of a stage function (each use has its own stage index
    and tag in MindSpore Serving's error messages)."""
    _check_use(loading, function, inputs, outputs, batch_size is not None, method)
    if batch_size is None:
        try:
            count = len(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            count = inputs
        if count != inputs:
            raise DefinitionError(
                f"function {getattr(function, '__name__', function)} input args count {count} not match the "
                f"count {inputs} registered in method"
            )
        body = instance_adapter(function, outputs, method)
    else:
        body = batch_adapter(function, outputs, method)
    base = getattr(function, "__name__", "stage")
    index = loading.stage_counts.get(method, 0)
    label = tag if tag is not None else f"Function '{loading.servable.name}.{base}'"
    body = worded(body, label, method, index, batch_size is not None)
    name, n = base, 1
    while name in loading.servable.stages:
        n += 1
        name = f"{base}_{n}"
    return loading.servable.add_stage(body, name=name, batch_size=batch_size, outputs=outputs)


def _check_use(
    loading: _Loading, function: Callable[..., Any], inputs: int, outputs: int, sized: bool, method: str
) -> None:
    """MindSpore Serving's rule: one stage function is used with one inputs count, one
    outputs count, and with or without batch_size, in every method."""
    first = loading.uses.setdefault(function, (inputs, outputs, sized))
    name = f"{loading.servable.name}.{getattr(function, '__name__', 'function')}"
    for what, count, last in (("inputs", inputs, first[0]), ("outputs", outputs, first[1])):
        if count != last:  # checked before batch_size, as MindSpore Serving does
            raise DefinitionError(
                f"Stage function '{name}' {what} count {count} not match last registered count {last}, "
                f"method name '{method}'"
            )
    if first[2] != sized:
        raise DefinitionError(
            f"Failed to add stage function {name}: parameter 'batch_size' in multiple 'add_stage' should be "
            f"enabled or disabled consistently"
        )


def add_stage(
    stage: Any, *args: Any, outputs_count: int, batch_size: int | None = None, tag: str | None = None
) -> Any:
    """Inside a method: run a function or a declared model on placeholders; returns its outputs."""
    loading = _loading("add_stage")
    trace = active_trace()
    if trace is None:
        raise DefinitionError(
            "register.add_stage can only be used inside a function decorated by register_method"
        )
    if tag is not None:  # MindSpore Serving's order: the tag, the inputs, then the stage
        check_str("tag", tag, DefinitionError)
    for item in args:
        if not isinstance(item, Placeholder):
            raise DefinitionError(
                "Each value of parameter *args is a placeholder for data and must come from the method inputs "
                "or the outputs of add_stage"
            )
    if not is_int(outputs_count, 1):
        raise DefinitionError(f"outputs_count must be an int >= 1; got {outputs_count!r}")
    loading.stage_counts[trace.method] = loading.stage_counts.get(trace.method, 0) + 1
    if isinstance(stage, Model):
        if stage not in loading.models:
            raise DefinitionError(
                f"Check failed in method '{trace.method}', the parameter 'stage' of add_stage must be function "
                f"or Model returned by declare_model"
            )
        assert stage.subgraphs is not None  # (a declared model, checked above)
        native = stage.subgraphs[0]
        for what, count, old in (
            ("inputs", len(args), native.inputs),
            ("outputs", outputs_count, native.outputs),
        ):
            if native.inputs is not None and old != count:  # used through add_stage before
                raise DefinitionError(
                    f"RegisterInputOutputInfo failed, {what} count {count} not match old count {old}, "
                    f"model: {stage.model_key}"
                )
        native.outputs = outputs_count
        return native(*args)
    if inspect.isfunction(stage) or inspect.ismethod(stage) or isinstance(stage, Stage):
        function = stage.function if isinstance(stage, Stage) else stage
        if batch_size is not None:
            if not is_int(batch_size):
                raise DefinitionError(
                    f"Parameter 'batch_size' should be int, but actually {type(batch_size)}"
                )
            if batch_size < 0:
                raise DefinitionError("Parameter 'batch_size' should be >= 0")
        return _stage_for(loading, function, len(args), outputs_count, batch_size, trace.method, tag)(*args)
    raise DefinitionError(
        f"Check failed in method '{trace.method}', the parameter 'stage' of add_stage must be function or "
        f"Model returned by declare_model, now is {type(stage)}"
    )


def _legacy_stage(name: str, batch: bool) -> Callable[..., Any]:
    tag = "Preprocess" if "preprocess" in name else "Postprocess"

    def call(function: Callable[..., Any], *args: Any) -> Any:
        loading = _loading(name)
        outputs = legacy_outputs(loading.legacy, loading.legacy_called, name)
        return add_stage(function, *args, outputs_count=outputs, batch_size=0 if batch else None, tag=tag)

    call.__name__ = name
    call.__doc__ = f"Deprecated MindSpore Serving interface; use add_stage. ({name})"
    return call


call_preprocess = _legacy_stage("call_preprocess", batch=False)
call_preprocess_pipeline = _legacy_stage("call_preprocess_pipeline", batch=True)
call_postprocess = _legacy_stage("call_postprocess", batch=False)
call_postprocess_pipeline = _legacy_stage("call_postprocess_pipeline", batch=True)


def call_servable(*args: Any) -> Any:
    """Deprecated MindSpore Serving interface: run the servable's only model; use add_stage."""
    loading = _loading("call_servable")
    outputs = legacy_outputs(loading.legacy, loading.legacy_called, "call_servable")
    if not loading.models:
        raise DefinitionError("There is no model declared, you can use declare_model to declare models.")
    if len(loading.models) > 1:
        raise DefinitionError(
            "There are more than one servable declared when the interface 'call_servable' is used, use "
            "'add_stage' to replace 'call_servable'"
        )
    return add_stage(loading.models[0], *args, outputs_count=outputs)


def register_method(output_names: str | Sequence[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: define a method of the servable being loaded, with these output names."""
    names = str_list("output_names", output_names, DefinitionError)
    kinds = {
        inspect.Parameter.VAR_POSITIONAL: "VAR_POSITIONAL",
        inspect.Parameter.VAR_KEYWORD: "VAR_KEYWORD",
        inspect.Parameter.KEYWORD_ONLY: "KEYWORD_ONLY",
    }

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        loading = _loading("register_method")
        for param in inspect.signature(function).parameters.values():
            if param.kind in kinds:
                raise DefinitionError(
                    f"'{function.__name__}' input {param.name} cannot be {kinds[param.kind]} !"
                )
        loading.legacy = legacy_meta(function)
        loading.legacy_called = set()
        try:
            if function.__name__ in loading.servable.methods:
                # MindSpore Serving traces the method before it registers the name: the
                # checks of its stages come first.
                build_method(function, servable=loading.servable.name, outputs=names)
                raise DefinitionError(f"Method {function.__name__} has been registered more than once.")
            loading.servable.add_method(function, outputs=names)
        except DefinitionError as exc:
            if getattr(exc, "unpacked", False):  # Python's own words there, then mindserve's
                raise DefinitionError(f"cannot unpack non-iterable _TensorDef object. {exc}") from exc
            if getattr(exc, "not_placeholder", False):
                raise DefinitionError(
                    f"Each value returned is a placeholder for data and must come from the method inputs or the "
                    f"outputs of add_stage. {exc}"
                ) from exc
            returned = getattr(exc, "returned", None)  # set when the count differs
            if returned is None:
                raise
            raise DefinitionError(
                f"Method return output size {returned} not match registered {len(names)}. {exc}"
            ) from exc
        return function

    return register


#: ``register.model``: MindSpore Serving's module of the ``Model`` class, for configs that
#: name ``register.model.Model``.
model = types.ModuleType("mindspore_serving.server.register.model")
model.Model = Model  # type: ignore[attr-defined]

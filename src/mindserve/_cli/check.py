"""``mindserve check DIR_OR_MODULE``: import a servable and check it without serving it.

Without ``--load``, nothing runs a model: the servable is imported here (its definition
checks run as it is defined), its version directories and model files are looked at, the
MindIR files' inputs and outputs are read in a child process, and every method's calls are
checked against them with the same checks a load runs (each model's plan). ``--load`` then loads, warms up and
runs each version in a child process of its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from mindserve._cli.info import read_mindir_files, spec_of
from mindserve._cli.probe import run_probe
from mindserve._cli.report import Report
from mindserve._define.method import Method
from mindserve._define.model import Model
from mindserve._define.servable import Servable, ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import MindServeError, counted
from mindserve._execution.integrity import check_model_file
from mindserve._execution.plan import ModelPlan
from mindserve._serving.versions import list_versions, resolve_version
from mindserve._values import TensorSpec, describe_value

TARGET = "Target"
CONFIG = "servable_config.py"


class TargetError(Exception):
    """The target cannot be imported, or defines no servable."""

    def __init__(self, message: str, detail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.detail = list(detail)


# -- finding the servables -----------------------------------------------------------


def load_target(target: str, dec_key: bytes | None, dec_mode: str) -> tuple[str, list[Servable]]:
    """Import ``target``; return what it is and the servables it defines."""
    if os.path.isdir(target):
        directory = os.path.abspath(target)
        if os.path.isfile(os.path.join(directory, CONFIG)):
            return "MindSpore Serving servable directory", [_compat(directory, dec_key, dec_mode)]
        children = sorted(
            entry for entry in os.listdir(directory) if os.path.isfile(os.path.join(directory, entry, CONFIG))
        )
        if children:
            return "MindSpore Serving servable directory (several servables)", [
                _compat(os.path.join(directory, child), dec_key, dec_mode) for child in children
            ]
        if os.path.isfile(os.path.join(directory, "__init__.py")):
            sys.path.insert(0, os.path.dirname(directory))
            return "Python package", _servables(
                _import(lambda: importlib.import_module(os.path.basename(directory)))
            )
        raise TargetError(
            f"{target} holds no {CONFIG} (a MindSpore Serving servable), no servable directories with one, "
            f"and no __init__.py (a Python package)"
        )
    if target.endswith(".py"):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise TargetError(f"{target} does not exist")
        name = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))

        def import_file() -> Any:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # so that worker processes and pickles find it again
            spec.loader.exec_module(module)
            return module

        return "Python file", _servables(_import(import_file))
    sys.path.insert(0, os.getcwd())
    return "Python module", _servables(_import(lambda: importlib.import_module(target)))


def _compat(directory: str, dec_key: bytes | None, dec_mode: str) -> Servable:
    from mindserve.compat._loader import load_servable

    return _import(
        lambda: load_servable(
            os.path.dirname(directory), os.path.basename(directory), dec_key=dec_key, dec_mode=dec_mode
        )
    )


def _import(load: Any) -> Any:
    try:
        return load()
    except MindServeError as exc:
        raise TargetError(str(exc)) from exc
    except BaseException as exc:  # whatever the user's module raises, SystemExit included
        frames = traceback.extract_tb(exc.__traceback__)
        user = [
            f
            for f in frames
            if "importlib" not in f.filename and f"{os.sep}mindserve{os.sep}" not in f.filename
        ]
        where = [f"{f.filename}:{f.lineno}: {f.line}" for f in (user or frames)[-3:]]
        raise TargetError(f"importing it raised {type(exc).__name__}: {exc}", where) from exc


def _servables(module: Any) -> list[Servable]:
    found: dict[int, Servable] = {}
    for value in vars(module).values():
        if isinstance(value, Servable):
            found.setdefault(id(value), value)
    if not found:
        raise TargetError(
            f"module {module.__name__} defines no mindserve.Servable at its top level "
            f"(svc = mindserve.Servable(...))"
        )
    return list(found.values())


def _select(servables: list[Servable], name: str | None) -> list[Servable]:
    if name is None:
        return servables
    chosen = [s for s in servables if s.name == name]
    if not chosen:
        raise TargetError(f"no servable named {name!r}; found {[s.name for s in servables]}")
    return chosen


# -- the check ---------------------------------------------------------------------


def check(
    target: str, only: str | None, load: bool, dec_key: bytes | None, dec_mode: str, timeout: float
) -> Report:
    report = Report("check")
    report.data.update(target=os.path.abspath(target) if os.path.exists(target) else target, servables=[])
    try:
        kind, servables = load_target(target, dec_key, dec_mode)
        servables = _select(servables, only)
    except TargetError as exc:
        report.add(TARGET, "fail", f"{target}: {exc}", detail=exc.detail, fix=_target_fix(target))
        return report
    report.add(TARGET, "ok", f"{target}: {kind}, defines {', '.join(repr(s.name) for s in servables)}")
    for servable in servables:
        data = _check_servable(report, servable, timeout)
        report.data["servables"].append(data)
        if load and data["checkable"]:
            for version in data["versions"]:
                _load_version(report, target, servable.name, version, dec_key, dec_mode, timeout, data)
    return report


def _target_fix(target: str) -> str:
    return (
        "give a .py file or a module that defines a mindserve.Servable at its top level, or a MindSpore "
        "Serving servable directory (with servable_config.py)"
    )


def _check_servable(report: Report, servable: Servable, timeout: float) -> dict[str, Any]:
    section = f"Servable '{servable.name}'"
    data: dict[str, Any] = {
        "name": servable.name,
        "directory": servable.directory,
        "versions": [],
        "models": [],
        "methods": [],
        "checkable": False,
    }
    try:
        definition = servable.definition()
    except MindServeError as exc:
        report.add(section, "fail", str(exc))
        return data
    for model in definition.models.values():
        data["models"].append(_model_data(model))
        report.add(section, "note", f"model {_describe_model(model)}")
    for method in definition.methods.values():
        data["methods"].append(
            {"name": method.name, "inputs": list(method.inputs), "outputs": list(method.outputs)}
        )
        report.add(section, "note", f"method {_describe_method(method)}")
    versions = _versions(report, section, definition)
    if versions is None:
        return data
    data["versions"] = [number for number, _ in versions]
    data["checkable"] = _check_files(report, section, definition, versions, timeout)
    return data


def _model_data(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "kind": model.kind,
        "source": model.origin.label(),
        "with_batch_dim": model.with_batch_dim,
        "without_batch_dim_inputs": list(model.without_batch_dim_inputs),
        "outputs": model.outputs,
        "encrypted": model.dec_key is not None,
    }


def _describe_model(model: Model) -> str:
    extras = []
    if not model.with_batch_dim:
        extras.append("with_batch_dim=False")
    if model.without_batch_dim_inputs:
        extras.append(f"without_batch_dim_inputs={list(model.without_batch_dim_inputs)}")
    if model.dec_key is not None:
        extras.append(f"encrypted ({model.dec_mode})")
    if model.batching is not None:
        extras.append(repr(model.batching))
    return f"'{model.name}': {model.kind} {model.origin.describe()}" + (
        f" ({', '.join(extras)})" if extras else ""
    )


def _describe_method(method: Method) -> str:
    steps = " -> ".join(
        f"{'stage' if isinstance(step.callee, Stage) else 'model'} '{step.callee.name}'"
        for step in method.steps
    )
    return f"'{method.name}'({', '.join(method.inputs)}) -> {', '.join(method.outputs)}" + (
        f": {steps}" if steps else ""
    )


def _versions(
    report: Report, section: str, definition: ServableDefinition
) -> list[tuple[int, str | None]] | None:
    """Each version to check and its directory; ``None`` when there is none."""
    numbers = list_versions(definition.directory) if definition.directory else []
    try:
        if not numbers:
            numbers = [resolve_version(definition, 0)[0]]
        versions = [resolve_version(definition, number) for number in numbers]
    except MindServeError as exc:
        report.add(section, "fail", str(exc), fix="put each version's model files in <directory>/<version>/")
        return None
    where = f" in {definition.directory}" if definition.directory else ""
    report.add(
        section,
        "ok",
        f"version{'s' if len(versions) > 1 else ''} {', '.join(str(n) for n, _ in versions)}{where}",
    )
    return versions


def _check_files(
    report: Report,
    section: str,
    definition: ServableDefinition,
    versions: list[tuple[int, str | None]],
    timeout: float,
) -> bool:
    """Check each version's model files and every method's calls against them."""
    ok = True
    wanted: list[tuple[int, str | None, Model, str]] = []
    for number, version_dir in versions:
        where = f"servable '{definition.name}' version {number}"
        for model in definition.models.values():
            if not model.origin.needs_files:
                continue
            path = model.origin.located(version_dir)
            if not os.path.isfile(path):
                report.add(section, "fail", f"version {number}: model '{model.name}': {path} does not exist")
                ok = False
                continue
            try:
                check_model_file(path, model.sha256, version_dir, f"{where}: model '{model.name}'")
            except MindServeError as exc:
                report.add(section, "fail", str(exc))
                ok = False
                continue
            wanted.append((number, version_dir, model, path))
    facts: list[dict[str, Any]] = []
    if wanted:
        read, failure, tail = read_mindir_files(
            [(p, m.dec_key, m.dec_mode) for _, _, m, p in wanted], timeout
        )
        if read is None:
            report.add(section, "fail", failure or "", fix="run `mindserve doctor`", detail=tail)
            return False
        facts = read
    specs: dict[tuple[int, str], tuple[tuple[TensorSpec, ...] | None, tuple[TensorSpec, ...] | None]] = {}
    for (number, _, model, _path), fact in zip(wanted, facts):
        problem = _file_problem(model, fact)
        if problem is not None:
            report.add(
                section, "fail", f"version {number}: model '{model.name}': {problem[0]}", fix=problem[1]
            )
            ok = False
            continue
        inputs = None if fact["inputs"] is None else tuple(spec_of(i) for i in fact["inputs"])
        outputs = None if fact["outputs"] is None else tuple(spec_of(o) for o in fact["outputs"])
        specs[(number, model.name)] = (inputs, outputs)
    for number, _ in versions:
        ok = _check_version(report, section, definition, number, specs) and ok
    return ok


def _file_problem(model: Model, fact: dict[str, Any]) -> tuple[str, str | None] | None:
    if fact.get("unavailable"):
        message = fact["error"]
        return message.split(" Hint: ")[0], message.partition(" Hint: ")[2] or None
    if fact["encrypted"] and model.dec_key is None:
        return (
            f"{fact['path']} is encrypted, and the model declares no dec_key",
            "svc.model(..., dec_key=..., dec_mode=...) (for a MindSpore Serving servable: mindserve check "
            "--dec-key/--dec-key-file, --dec-mode)",
        )
    if fact["error"] is not None:
        if model.dec_key is not None and not fact["encrypted"]:
            return f"{fact['path']} is not encrypted, but the model declares a dec_key", "leave out dec_key"
        return (
            f"cannot read {fact['path']}: {fact['error']}",
            "check dec_key and dec_mode"
            if model.dec_key is not None
            else "export it again with mindspore.export",
        )
    return None


def _check_version(
    report: Report,
    section: str,
    definition: ServableDefinition,
    number: int,
    specs: dict[tuple[int, str], tuple[tuple[TensorSpec, ...] | None, tuple[TensorSpec, ...] | None]],
) -> bool:
    where = f"servable '{definition.name}' version {number}"
    ok = True
    plans: dict[str, ModelPlan] = {}
    for model in definition.models.values():
        if (number, model.name) not in specs:
            continue
        inputs, outputs = specs[(number, model.name)]
        try:  # the checks a load runs on a model's declaration against its file
            plans[model.name] = ModelPlan.of(model, inputs, where)
        except MindServeError as exc:  # it names the servable, version and model
            report.add(section, "fail", str(exc))
            ok = False
            continue
        if outputs is not None and model.outputs is not None and len(outputs) != model.outputs:
            report.add(
                section,
                "fail",
                f"version {number}: model '{model.name}' returns {counted(len(outputs), 'output')}, but is declared with "
                f"outputs={model.outputs}",
                fix=f"svc.model(..., outputs={len(outputs)})",
            )
            ok = False
            continue
        report.add(
            section, "ok", f"version {number}: model '{model.name}': {_batching_text(plans[model.name])}"
        )
        if plans[model.name].fixed_batch_size == 1:
            report.add(
                section,
                "warn",
                f"version {number}: model '{model.name}' was exported with a fixed batch size of 1, so it never "
                f"batches instances across callers",
                fix="export it with a dynamic batch dimension, mindspore.Tensor(shape=[None, ...])",
            )
    for method in definition.methods.values():
        for problem in _flow_problems(method, plans, specs, number):
            report.add(section, "fail", f"version {number}: method '{method.name}': {problem}")
            ok = False
    return ok


def _batching_text(plan: ModelPlan) -> str:
    specs = plan.instance_specs
    taken = (
        "inputs not declared in the file"
        if specs is None
        else "one instance takes " + ", ".join("any value" if s is None else s.describe() for s in specs)
    )
    batching = plan.batching
    if plan.fixed_batch_size is not None:
        how = f"batches of exactly {plan.fixed_batch_size} (fixed in the file)"
    elif batching.max_batch_size == 1:
        how = "one instance per run"
    else:
        buckets = f", padded to {list(batching.buckets)}" if batching.buckets else ""
        how = f"batches of up to {batching.max_batch_size}{buckets}"
    return f"{taken}; {how}"


def _flow_problems(
    method: Method,
    plans: dict[str, ModelPlan],
    specs: dict[tuple[int, str], tuple[tuple[TensorSpec, ...] | None, tuple[TensorSpec, ...] | None]],
    number: int,
) -> list[str]:
    """Where a model's output feeds a model input of another dtype or shape."""
    known: dict[int, tuple[TensorSpec, str]] = {}
    problems = []
    for step in method.steps:
        model = step.callee
        if not isinstance(model, Model) or model.name not in plans:
            continue
        expected = plans[model.name].instance_specs or ()
        for position, ref in enumerate(step.args):
            wanted = expected[position] if position < len(expected) else None
            if ref in known and wanted is not None:
                given, label = known[ref]
                if not _fits(given, wanted):
                    problems.append(
                        f"{label} ({given.describe()}) goes to input {position} of model '{model.name}', which "
                        f"takes {wanted.describe()}"
                    )
        outputs = specs.get((number, model.name), (None, None))[1]
        if outputs is not None and len(outputs) == len(step.outputs):
            for _k, (ref, spec) in enumerate(zip(step.outputs, outputs)):
                per_instance = spec.drop_batch_dim() if model.with_batch_dim and spec.shape else spec
                known[ref] = (per_instance, method.labels[ref])
    return problems


def _fits(given: TensorSpec, expected: TensorSpec) -> bool:
    if given.dtype is not None and expected.dtype is not None and given.dtype != expected.dtype:
        return False
    if len(given.shape) != len(expected.shape):
        return False
    return all(a is None or b is None or a == b for a, b in zip(given.shape, expected.shape))


# -- --load --------------------------------------------------------------------------


def _load_version(
    report: Report,
    target: str,
    name: str,
    version: int,
    dec_key: bytes | None,
    dec_mode: str,
    timeout: float,
    data: dict[str, Any],
) -> None:
    section = f"Servable '{name}' version {version} (--load)"
    payload = {
        "target": os.path.abspath(target) if os.path.exists(target) else target,
        "servable": name,
        "version": version,
        "dec_key": dec_key.hex() if dec_key is not None else None,
        "dec_mode": dec_mode,
    }
    report.progress(
        f"loading servable '{name}' version {version} in a child process (load, warm-up, a test call)"
    )
    result = run_probe("mindserve._cli.check:probe_load", payload, timeout=timeout, env={"GLOG_v": "3"})
    data.setdefault("loaded", {})[str(version)] = result.value if result.ok else {"failure": result.failure}
    if not result.ok:
        report.add(
            section,
            "fail",
            f"loading and running it in a child process failed: {result.failure}",
            fix="run `mindserve doctor`; the output above is the end of what the child printed",
            detail=result.stderr_tail(),
        )
        return
    value = result.value
    if value["error"] is not None:
        report.add(section, "fail", value["error"], detail=value.get("detail", ()))
        return
    for model in value["models"]:
        warmed = f", warmed up batch sizes {model['warmed_up']}" if model["warmed_up"] else ""
        report.add(section, "ok", f"model '{model['name']}' loaded{warmed}")
    report.add(
        section, "note", f"loaded in {value['seconds']:.2f} s on {value['device'] or 'no MindSpore device'}"
    )
    for method in value["methods"]:
        if method["skipped"]:
            report.add(section, "warn", f"method '{method['name']}' not run: {method['skipped']}")
        elif method["error"]:
            report.add(
                section,
                "fail",
                f"method '{method['name']}' failed on a generated instance ({method['instance']}): {method['error']}",
            )
        else:
            outputs = ", ".join(f"{k}: {v}" for k, v in method["outputs"].items())
            report.add(section, "ok", f"method '{method['name']}' ran on {method['instance']}: {outputs}")
            for problem in method.get("unsendable", ()):
                report.add(
                    section,
                    "warn",
                    f"method '{method['name']}': {problem}",
                    fix="return numbers, str, bytes, lists, dicts or numpy arrays to serve it over HTTP",
                )


def probe_load(payload: dict[str, Any]) -> dict[str, Any]:
    """In the child: load and warm up one version, and run a generated instance through each method."""
    from mindserve._serving.runtime import Runtime

    key = bytes.fromhex(payload["dec_key"]) if payload["dec_key"] else None
    try:
        kind, servables = load_target(payload["target"], key, payload["dec_mode"])
        (servable,) = _select(servables, payload["servable"])
    except TargetError as exc:
        return {"error": str(exc), "detail": exc.detail}
    result: dict[str, Any] = {"error": None, "models": [], "methods": []}
    with Runtime() as rt:
        started = time.perf_counter()
        try:
            info = rt.start(servable, version=payload["version"])
        except MindServeError as exc:
            return {"error": str(exc)}
        result["seconds"] = time.perf_counter() - started
        result["device"] = info.device
        models = {m.name: m for m in info.models}
        result["models"] = [{"name": m.name, "warmed_up": list(m.warmed_up)} for m in info.models]
        definition = servable.definition()
        for method in definition.methods.values():
            outcome: dict[str, Any] = {"name": method.name, "skipped": None, "error": None, "outputs": {}}
            result["methods"].append(outcome)
            instance, why = generate_instance(method, definition, models)
            if instance is None:
                outcome["skipped"] = why
                continue
            outcome["instance"] = (
                "{" + ", ".join(f"{k!r}: {describe_value(v)}" for k, v in instance.items()) + "}"
            )
            try:
                (outputs,) = rt.infer(servable.name, method.name, [instance], version=info.version)
            except Exception as exc:  # the report says what failed; nothing is raised
                outcome["error"] = f"{type(exc).__name__}: {exc}"
                continue
            outcome["outputs"] = {k: describe_value(v) for k, v in outputs.items()}
            outcome["unsendable"] = unsendable(outputs, compat=kind.startswith("MindSpore Serving"))
    return result


def unsendable(outputs: dict[str, Any], *, compat: bool) -> list[str]:
    """What an HTTP reply could not hold of one instance's outputs: RestApp's own rule
    (any JSON-able value), or MindSpore Serving's (tensors, str, bytes) for its servables."""
    from mindserve.http._reply import Unsendable, native_json, tensor_json

    app = "mindserve.compat.server.start_restful_server" if compat else "mindserve.http.RestApp"
    problems = []
    for name, value in outputs.items():
        try:
            (tensor_json if compat else native_json)(value)
        except Unsendable as exc:
            problems.append(f"output '{name}' (a {type(value).__name__}) cannot be sent by {app}: {exc}")
    return problems


def generate_instance(
    method: Method, definition: ServableDefinition, models: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """Zeros of the dtype and shape each input's first model takes; ``None`` and why when an
    input goes to a stage first (whose parameter types mindserve cannot know)."""
    instance: dict[str, Any] = {}
    for ref, name in enumerate(method.inputs):
        step = next((s for s in method.steps if ref in s.args), None)
        if step is None:  # returned as it is
            instance[name] = np.float32(0)
            continue
        if isinstance(step.callee, Stage):
            return None, (
                f"input '{name}' goes to stage '{step.callee.name}' first, so mindserve cannot tell what it takes; "
                f"test it with rt.infer on a real instance"
            )
        model = definition.models[step.callee.name]
        specs = models[model.name].inputs
        position = step.args.index(ref)
        if specs is None:
            return (
                None,
                f"input '{name}' goes to model '{model.name}', whose file does not declare its inputs",
            )
        spec = specs[position]
        if model.with_batch_dim and position not in model.without_batch_dim_inputs and spec.shape:
            spec = spec.drop_batch_dim()
        shape = tuple(1 if d is None else d for d in spec.shape)
        instance[name] = np.zeros(shape, spec.dtype if spec.dtype is not None else np.float32)
    return instance, None

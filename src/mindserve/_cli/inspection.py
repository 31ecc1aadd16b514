"""``mindserve check`` without ``--load``: the checks that run no model.

In a child process (:func:`probe_check`), the target is imported (its definition checks run
as it is defined), its version directories and model files are looked at, the MindIR files'
inputs and outputs are read (in a child of its own), and every method's calls are checked
against them with the same checks a load runs (each model's plan).
"""

from __future__ import annotations

import os
import time
from typing import Any

from mindserve._cli.info import read_mindir_files, spec_of
from mindserve._cli.report import Report
from mindserve._cli.target import TARGET, TargetError, load_target, select
from mindserve._define.method import Method
from mindserve._define.model import Model
from mindserve._define.servable import Servable, ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import MindServeError, counted
from mindserve._execution.integrity import check_model_file
from mindserve._execution.plan import ModelPlan
from mindserve._serving.versions import list_versions, resolve_version
from mindserve._values import TensorSpec


def probe_check(payload: dict[str, Any]) -> dict[str, Any]:
    """In the child: import the target and check each servable it defines; the findings (as
    :meth:`Report.to_json` writes them) and the servables' data."""
    target = payload["target"]
    key = bytes.fromhex(payload["dec_key"]) if payload["dec_key"] else None
    deadline = payload["deadline"]
    report = Report("check")
    report.data["servables"] = []
    try:
        kind, servables = load_target(target, key, payload["dec_mode"])
        servables = select(servables, payload["servable"])
    except TargetError as exc:
        report.add(TARGET, "fail", f"{target}: {exc}", detail=exc.detail, fix=target_fix(target))
    else:
        report.add(TARGET, "ok", f"{target}: {kind}, defines {', '.join(repr(s.name) for s in servables)}")
        for servable in servables:
            remaining = max(1.0, deadline - time.time())
            report.data["servables"].append(check_servable(report, servable, remaining))
    return report.to_json()


def target_fix(target: str) -> str:
    return (
        "give a .py file or a module that defines a mindserve.Servable at its top level, or a MindSpore "
        "Serving servable directory (with servable_config.py)"
    )


def check_servable(report: Report, servable: Servable, timeout: float) -> dict[str, Any]:
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

"""``mindserve check --load``: each version loaded, warmed up and run on a generated instance,
in a child process of its own (:func:`probe_load`)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from mindserve._cli.probe import run_probe
from mindserve._cli.report import Report
from mindserve._cli.target import TargetError, load_target, select
from mindserve._define.method import Method
from mindserve._define.servable import ServableDefinition
from mindserve._define.stage import Stage
from mindserve._errors import MindServeError
from mindserve._values import describe_value


def load_version(
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
    result = run_probe("mindserve._cli.loading:probe_load", payload, timeout=timeout, env={"GLOG_v": "3"})
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
        if model.get("graphs"):  # MindSpore models: the graphs its load and warm-up compiled
            warmed += f" ({model['graphs']} graphs compiled, warm-up {model['warm_up_seconds']:.2f} s)"
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
    from mindserve._runtime import Runtime

    key = bytes.fromhex(payload["dec_key"]) if payload["dec_key"] else None
    try:
        kind, servables = load_target(payload["target"], key, payload["dec_mode"])
        (servable,) = select(servables, payload["servable"])
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
        result["models"] = [
            {
                "name": m.name,
                "warmed_up": list(m.warmed_up),
                "graphs": m.graphs,
                "warm_up_seconds": _warm_up_seconds(rt, info.name, info.version, m.name),
            }
            for m in info.models
        ]
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


def _warm_up_seconds(rt: Any, servable: str, version: int, model: str) -> float | None:
    """The seconds a model's warm-up runs took (``None`` when metrics are off)."""
    try:
        compiled = rt.metrics().model(servable, model, version=version).compiled
    except MindServeError:
        return None
    return sum(seconds for _, seconds in compiled)


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

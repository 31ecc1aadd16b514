"""MindSpore Serving's legacy ``call_*`` functions, as MindSpore Serving reads them: the
outputs count of each from the method's source (``ast``), and their order and once rules
(used by :mod:`mindserve.compat.register`)."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any, Callable

from mindserve._define.tracing import active_trace
from mindserve._errors import DefinitionError

LEGACY_STAGES = (
    "call_preprocess",
    "call_preprocess_pipeline",
    "call_postprocess",
    "call_postprocess_pipeline",
)


def legacy_meta(function: Callable[..., Any]) -> dict[str, int]:
    """MindSpore Serving's reading of a method that uses the legacy ``call_*`` functions:
    the outputs count of each (how many names its result is assigned to), with its rules:
    no other statements beside them, and a ``call_servable`` among them."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
        return {}
    meta: dict[str, int] = {}
    other: ast.stmt | None = None
    for node in body:
        if isinstance(node, (ast.Return, ast.Expr)):
            continue
        if not isinstance(node, ast.Assign):
            other = other or node
            continue
        target = node.targets[0]
        if not isinstance(target, (ast.Name, ast.Tuple)) or not isinstance(node.value, ast.Call):
            continue
        func = node.value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in (*LEGACY_STAGES, "call_servable"):
            other = other or node
            continue
        inputs = len(node.value.args) - (0 if name == "call_servable" else 1)
        if inputs <= 0:
            raise DefinitionError(f"Invalid '{name}' invoke args")
        meta[name] = len(target.elts) if isinstance(target, ast.Tuple) else 1
    if meta and other is not None:
        names = ";".join(meta)
        raise DefinitionError(
            f"Failed to parse method '{function.__name__}', complex statements such as conditions and loops are "
            f"not supported in register_method when the interface '{names}' is used, use 'add_stage' to replace "
            f"'{names}', code {type(other)}: line {other.lineno}: {ast.get_source_segment(source, other)}"
        )
    if meta and "call_servable" not in meta:
        raise DefinitionError("Not find the invoke of 'call_servable'")
    return meta


def legacy_outputs(legacy: dict[str, int], called: set[str], name: str) -> int:
    """The outputs count of a legacy call, after MindSpore Serving's order and once rules."""
    method = active_trace().method if active_trace() is not None else "?"  # type: ignore[union-attr]
    if name not in legacy:
        raise DefinitionError(
            f"Failed to parse method '{method}', complex statements such as conditions and loops are not "
            f"supported in register_method when the interface '{name}' is used, use 'add_stage' to replace "
            f"'{name}'"
        )
    check = f"Check failed in method '{method}', "
    if name.startswith("call_preprocess"):
        if "pre" in called:
            raise DefinitionError(
                check + "call_preprocess or call_preprocess_pipeline should not be invoked more than once"
            )
        if "servable" in called:
            raise DefinitionError(check + f"call_servable should be invoked after {name}")
        if "post" in called:
            raise DefinitionError(
                check + f"call_postprocess or call_postprocess_pipeline should be invoked after {name}"
            )
        called.add("pre")
    elif name == "call_servable":
        if "servable" in called:
            raise DefinitionError(check + "call_servable should not be invoked more than once")
        if "post" in called:
            raise DefinitionError(
                check + "call_postprocess or call_postprocess_pipeline should be invoked after call_servable"
            )
        called.add("servable")
    else:
        if "post" in called:
            raise DefinitionError(
                check + "call_postprocess or call_postprocess_pipeline should not be invoked more than once"
            )
        called.add("post")
    return legacy[name]

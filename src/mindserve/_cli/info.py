"""``mindserve info MODEL.mindir``: what a MindIR file takes and returns, and how it batches.

The file is parsed in a child process (:mod:`.probe`) with MindSpore's own schema; this
process never imports MindSpore.
"""

from __future__ import annotations

import os
from typing import Any

from mindserve._batching.lengths import DEFAULT_MAX_LENGTH, length_buckets
from mindserve._cli.probe import run_probe
from mindserve._cli.report import Report
from mindserve._execution.integrity import file_sha256
from mindserve._execution.padding import dynamic_axes
from mindserve._execution.plan import default_batching
from mindserve._values import TensorSpec

FILE = "File"
INPUTS = "Inputs"
OUTPUTS = "Outputs"
BATCHING = "Batching"
LENGTHS = "Lengths"

#: What a child reports about one file.
MindirFacts = dict[str, Any]


def probe_mindir(payload: Any) -> list[MindirFacts]:
    """In the child: whether each file is encrypted, and its inputs and outputs."""
    from mindserve._errors import MindSporeUnavailableError
    from mindserve._execution import mindspore as _mindspore

    facts = []
    for item in payload["files"]:
        path, key, mode = item["path"], item["dec_key"], item["dec_mode"]
        fact: MindirFacts = {"path": path, "encrypted": None, "inputs": None, "outputs": None, "error": None}
        facts.append(fact)
        try:
            fact["encrypted"] = _mindspore.mindir_encrypted(path)
        except MindSporeUnavailableError as exc:
            fact["error"] = str(exc)
            fact["unavailable"] = True
            continue
        if fact["encrypted"] and key is None:
            continue
        try:
            inputs, outputs = _mindspore.read_mindir_io(path, bytes.fromhex(key) if key else None, mode)
        except Exception as exc:
            fact["error"] = f"{type(exc).__name__}: {_mindspore.first_line(exc)}"
            continue
        fact["inputs"] = None if inputs is None else [_spec_json(s, name) for name, s in inputs]
        fact["outputs"] = None if outputs is None else [_spec_json(s) for s in outputs]
    return facts


def read_mindir_files(
    files: list[tuple[str, bytes | None, str]], timeout: float
) -> tuple[list[MindirFacts] | None, str | None, list[str]]:
    """The facts of each ``(path, dec_key, dec_mode)``, read in one child process; or
    ``None``, why, and the end of the child's stderr when the child failed."""
    payload = {
        "files": [
            {"path": os.path.abspath(p), "dec_key": k.hex() if k is not None else None, "dec_mode": m}
            for p, k, m in files
        ]
    }
    result = run_probe("mindserve._cli.info:probe_mindir", payload, timeout=timeout, env={"GLOG_v": "3"})
    if not result.ok:
        return None, f"reading the file in a child process failed: {result.failure}", result.stderr_tail()
    return result.value, None, []


def _spec_json(spec: TensorSpec, name: str | None = None) -> dict[str, Any]:
    return {"name": name, "dtype": None if spec.dtype is None else str(spec.dtype), "shape": list(spec.shape)}


def spec_of(item: dict[str, Any]) -> TensorSpec:
    return TensorSpec(tuple(item["shape"]), item["dtype"])


def shape_text(shape: Any) -> str:
    return TensorSpec(tuple(shape)).describe().removeprefix("array of shape ")


def batch_dimension(inputs: list[TensorSpec], names: list[str]) -> tuple[str, str, int | None, str | None]:
    """How a model with these inputs batches: ``(kind, explanation, fixed size, fix)``.

    ``kind`` is ``dynamic``, ``fixed``, ``none`` (no inputs, or a scalar input) or ``mixed``.
    """
    export = "export it with a dynamic batch dimension, mindspore.Tensor(shape=[None, ...])"
    if not inputs:
        return "none", "the model takes no inputs, so there is nothing to batch", None, None
    scalars = [n for n, s in zip(names, inputs) if not s.shape]
    if scalars:
        return (
            "none",
            f"input {scalars[0]!r} is a scalar, so it has no batch dimension",
            None,
            f"declare the model with with_batch_dim=False (each instance runs alone), or list the scalar "
            f"inputs in without_batch_dim_inputs=[{', '.join(str(names.index(n)) for n in scalars)}]",
        )
    firsts = [s.shape[0] for s in inputs]
    if all(d is None for d in firsts):
        batching = default_batching()
        buckets = ", ".join(map(str, batching.buckets or ()))
        return (
            "dynamic",
            f"the batch dimension (the first) is dynamic: mindserve batches instances from all callers "
            f"together, up to max_batch_size ({batching.max_batch_size} by default), padding each batch to a "
            f"bucket size ({buckets}) that the warm-up compiles once at load",
            None,
            None,
        )
    if len(set(firsts)) == 1:
        size = firsts[0]
        if size == 1:
            return (
                "fixed",
                "the batch dimension is fixed at 1: every instance runs alone, nothing is batched across callers",
                1,
                f"to batch, {export}",
            )
        return (
            "fixed",
            f"the batch dimension is fixed at {size}: mindserve always runs batches of exactly {size}, padding "
            f"a partial batch up to {size} (a lone instance costs a whole batch)",
            size,
            f"to choose batch sizes, {export}",
        )
    listed = ", ".join(f"{n}: {d}" for n, d in zip(names, firsts))
    return (
        "mixed",
        f"the inputs' first dimensions differ ({listed}), so they are not all a batch dimension",
        None,
        "list the inputs that have no batch dimension in svc.model(..., without_batch_dim_inputs=[...]), "
        "or declare with_batch_dim=False",
    )


def info(path: str, dec_key: bytes | None, dec_mode: str, timeout: float) -> Report:
    report = Report("info")
    report.data["path"] = os.path.abspath(path)
    if not os.path.isfile(path):
        report.add(
            FILE, "fail", f"{path} does not exist or is not a file", fix="give the path of a .mindir file"
        )
        return report
    size = os.path.getsize(path)
    digest = file_sha256(path)
    report.data.update(size=size, sha256=digest)
    report.add(FILE, "note", f"{os.path.abspath(path)}: {size:,} bytes, sha256 {digest}")
    if not path.endswith(".mindir"):
        report.add(
            FILE, "warn", "the name does not end in .mindir, which svc.model() requires of a model file"
        )
    facts, failure, tail = read_mindir_files([(path, dec_key, dec_mode)], timeout)
    if facts is None:
        report.add(FILE, "fail", failure or "", fix="run `mindserve doctor`", detail=tail)
        return report
    fact = facts[0]
    report.data.update(fact)
    if fact.get("unavailable"):
        report.add(
            FILE, "fail", fact["error"].split(" Hint: ")[0], fix=fact["error"].partition(" Hint: ")[2] or None
        )
        return report
    if fact["encrypted"] and dec_key is None:
        report.add(
            FILE,
            "warn",
            "encrypted: its inputs and outputs cannot be read without the key",
            fix="pass --dec-key (or --dec-key-file) and --dec-mode, as given to mindspore.export; to serve "
            "it, svc.model(..., dec_key=..., dec_mode=...)",
        )
        return report
    report.add(
        FILE,
        "ok",
        f"encrypted ({dec_mode}), decrypted with the key given" if fact["encrypted"] else "not encrypted",
    )
    if fact["error"] is not None:
        hint = (
            "check --dec-key and --dec-mode: the key and mode the file was exported with"
            if dec_key is not None
            else "is it a complete MindIR file, exported by mindspore.export?"
        )
        if dec_key is not None and not fact["encrypted"]:
            hint = "the file is not encrypted: leave out --dec-key"
        report.add(FILE, "fail", f"cannot read the file: {fact['error']}", fix=hint)
        return report
    _describe(report, fact)
    return report


def _describe(report: Report, fact: MindirFacts) -> None:
    if fact["inputs"] is None:
        report.add(INPUTS, "warn", "the file does not declare its inputs in a form mindserve reads")
        inputs: list[TensorSpec] = []
        names: list[str] = []
    else:
        inputs = [spec_of(i) for i in fact["inputs"]]
        names = [i["name"] or f"input {k}" for k, i in enumerate(fact["inputs"])]
        for k, (name, spec) in enumerate(zip(names, inputs)):
            per_instance = f"; one instance: {shape_text(spec.shape[1:])}" if spec.shape else ""
            report.add(INPUTS, "note", f"{k} {name}: {spec.describe()}{per_instance}")
        if not inputs:
            report.add(INPUTS, "note", "none")
    if fact["outputs"] is None:
        report.add(OUTPUTS, "note", "the file does not declare its outputs in a form mindserve reads")
    else:
        for k, item in enumerate(fact["outputs"]):
            report.add(OUTPUTS, "note", f"{k}: {spec_of(item).describe()}")
        count = len(fact["outputs"])
        if count > 1:
            report.add(OUTPUTS, "note", f"declare it with svc.model(..., outputs={count})")
    if fact["inputs"] is not None:
        kind, text, size, fix = batch_dimension(inputs, names)
        report.data["batch"] = {"kind": kind, "fixed_size": size}
        status = "warn" if (kind in ("mixed", "none") and inputs) or size == 1 else "ok"
        report.add(BATCHING, status, text, fix=fix)
        if kind == "dynamic":
            _describe_lengths(report, inputs, names)


def _describe_lengths(report: Report, inputs: list[TensorSpec], names: list[str]) -> None:
    """Inputs whose non-batch dimensions are dynamic: how they batch, how many graphs."""
    axes = dynamic_axes([s.drop_batch_dim() for s in inputs])
    if not axes:
        return
    listed = ", ".join(f"{names[p]} (axis {a + 1})" for p, a in axes.items())
    lengths = length_buckets(DEFAULT_MAX_LENGTH)
    sizes = default_batching().buckets or ()
    report.data["lengths"] = {"inputs": sorted(axes), "buckets": list(lengths)}
    report.add(
        LENGTHS,
        "note",
        f"variable length: {listed}. Batches are padded to length buckets ({', '.join(map(str, lengths))}) "
        f"when svc.model(..., padding=mindserve.Padding(...)) declares how the model ignores padding, or when "
        f"a load-time probe finds padding changes no output; the warm-up then compiles "
        f"{len(sizes)} batch sizes x {len(lengths)} lengths = {len(sizes) * len(lengths)} graphs. Otherwise "
        f"each length runs as its own batch and compiles its own graph",
        fix="declare the model's mask or lengths input, e.g. padding=mindserve.Padding(mask={1: 0}); "
        "see docs/batching.md",
    )

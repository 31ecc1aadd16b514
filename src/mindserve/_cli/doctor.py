"""``mindserve doctor``: is this Python, MindSpore and machine ready to serve models?

Everything that loads MindSpore's native code runs in a child process (:mod:`.probe`).
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from typing import Any

from mindserve._cli.probe import run_probe
from mindserve._cli.report import Report
from mindserve._requirements import (
    MINDSPORE_REQUIREMENT,
    PYTHON_BELOW,
    PYTHON_MIN,
    PYTHON_REQUIREMENT,
    TESTED_MINDSPORE_VERSIONS,
)
from mindserve._version import __version__

PYTHON = "Python"
MINDSPORE = "MindSpore"
NATIVE = MINDSPORE  # its native library is part of it
DEVICES = "Devices"
THREADS = "Threads"

_INSTALL = f"pip install '{MINDSPORE_REQUIREMENT}'"
_REINSTALL = f"pip install --force-reinstall '{MINDSPORE_REQUIREMENT}'"
_CANNOT_OPEN = re.compile(r"([\w.+-]+\.so[\w.]*): cannot open shared object file")
_VERSION_NOT_FOUND = re.compile(r"version `([^']+)' not found")


def doctor(timeout: float) -> Report:
    report = Report("doctor")
    _check_python(report)
    package = _find_mindspore(report)
    if package is not None:
        report.progress("loading MindSpore's native libraries in a child process")
        loads = _check_native(report, package, timeout)
        report.progress(
            f"importing MindSpore in a child process{' and asking it for its devices' if loads else ''}"
        )
        devices = _check_import(report, package, timeout, devices=loads)
        if devices is not None:
            _check_devices(report, devices["found"], devices["stderr"])
    _check_threads(report)
    return report


# -- Python --------------------------------------------------------------------------


def _check_python(report: Report) -> None:
    version = ".".join(map(str, sys.version_info[:3]))
    report.data["python"] = {
        "version": version,
        "executable": sys.executable,
        "supported": PYTHON_REQUIREMENT,
    }
    report.data["mindserve"] = {"version": __version__, "location": _package_dir("mindserve")}
    text = f"Python {version} at {sys.executable}"
    if PYTHON_MIN <= sys.version_info[:2] < PYTHON_BELOW:
        report.add(PYTHON, "ok", f"{text} (mindserve supports Python {PYTHON_REQUIREMENT})")
    else:
        report.add(
            PYTHON,
            "fail",
            f"{text} is outside the Pythons mindserve and MindSpore support ({PYTHON_REQUIREMENT})",
            fix=f"use a Python in {PYTHON_REQUIREMENT}, for example in a new virtualenv",
        )
    report.add(PYTHON, "note", f"mindserve {__version__} from {_package_dir('mindserve')}")


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return next(iter(spec.submodule_search_locations))
    return os.path.dirname(spec.origin) if spec.origin else None


# -- MindSpore -----------------------------------------------------------------------


def _find_mindspore(report: Report) -> str | None:
    """Where the mindspore package is, found without importing it."""
    try:
        location = _package_dir("mindspore")
    except (ImportError, ValueError) as exc:  # a broken parent or a None in sys.modules
        report.add(MINDSPORE, "fail", f"MindSpore cannot be found: {exc}", fix=_INSTALL)
        return None
    try:
        distribution = importlib.metadata.version("mindspore")
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    report.data["mindspore"] = {"location": location, "distribution_version": distribution}
    if location is None:
        report.add(
            MINDSPORE,
            "fail",
            f"MindSpore is not installed for {sys.executable}",
            fix=f"{_INSTALL} (mindserve supports {MINDSPORE_REQUIREMENT})",
        )
        return None
    installed = f" (pip says {distribution})" if distribution else ""
    report.add(MINDSPORE, "note", f"package at {location}{installed}")
    return location


def probe_import(payload: Any) -> dict[str, Any]:
    """In the child: import MindSpore the way a model load does."""
    import warnings

    from mindserve._errors import MindSporeUnavailableError
    from mindserve._execution import mindspore as _mindspore

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        try:
            ms = _mindspore.import_mindspore()
        except MindSporeUnavailableError as exc:
            return {"imported": False, "error": str(exc)}
    version = str(getattr(ms, "__version__", "unknown"))
    return {
        "imported": True,
        "version": version,
        "file": getattr(ms, "__file__", None),
        "supported": _mindspore.version_supported(version),
        "devices": _devices(ms) if payload and payload.get("devices") else None,
    }


def _check_import(report: Report, package: str, timeout: float, devices: bool) -> dict[str, Any] | None:
    """Import MindSpore in a child (and, with ``devices``, ask it for its devices there);
    the child's findings about devices, or ``None`` when it did not import."""
    result = run_probe("mindserve._cli.doctor:probe_import", {"devices": devices}, timeout=timeout)
    if not result.ok:
        report.add(
            MINDSPORE,
            "fail",
            f"importing MindSpore{' and asking it for its devices' if devices else ''} failed: {result.failure}",
            fix=f"reinstall it: {_REINSTALL}; if that does not help, the output above names the part of "
            f"MindSpore that failed",
            detail=result.stderr_tail(),
        )
        return None
    value = dict(result.value)
    found = value.pop("devices", None)
    report.data["mindspore"].update(value)
    if not value["imported"]:
        report.add(MINDSPORE, "fail", value["error"].split(" Hint: ")[0], fix=_hint(value["error"]))
        return None
    version = value["version"]
    tested = ", ".join(TESTED_MINDSPORE_VERSIONS)
    if not value["supported"]:
        report.add(
            MINDSPORE,
            "fail",
            f"MindSpore {version} is outside the range mindserve supports ({MINDSPORE_REQUIREMENT}; tested "
            f"with {tested}): models may fail to load or run",
            fix=_INSTALL,
        )
    elif version not in TESTED_MINDSPORE_VERSIONS:
        report.add(
            MINDSPORE,
            "warn",
            f"MindSpore {version} imports and is in the supported range ({MINDSPORE_REQUIREMENT}), but "
            f"mindserve's tests ran with {tested}",
        )
    else:
        report.add(
            MINDSPORE, "ok", f"MindSpore {version} imports (supported: {MINDSPORE_REQUIREMENT}; tested)"
        )
    return {"found": found, "stderr": result.stderr} if found is not None else None


def _hint(message: str) -> str:
    _, _, hint = message.partition(" Hint: ")
    return hint or _REINSTALL


# -- the native library --------------------------------------------------------------


def native_libraries(package: str) -> list[str]:
    """MindSpore's native entry points: ``libmindspore.so`` where the release has one (it is
    split into ``lib/libmindspore_*.so`` since 2.3), and the ``_c_expression`` extension
    module that loads them all."""
    found = sorted(glob.glob(os.path.join(package, "lib", "libmindspore.so")))
    found += sorted(glob.glob(os.path.join(package, "_c_expression*.so")))
    return found


def probe_native(payload: Any) -> dict[str, Any]:
    """In the child: dlopen each library as Python would, and say what failed."""
    import ctypes

    results: dict[str, str | None] = {}
    for path in payload["paths"]:
        try:
            ctypes.CDLL(path, mode=getattr(os, "RTLD_GLOBAL", 0))
            results[path] = None
        except OSError as exc:
            results[path] = str(exc)
    return results


def missing_libraries(path: str, message: str = "") -> list[str]:
    """The shared libraries ``path`` needs that the dynamic linker cannot find (from the
    loader's message, and ``ldd`` where it exists), and the symbol versions it lacks."""
    missing = _CANNOT_OPEN.findall(message) + [
        f"symbol version {v}" for v in _VERSION_NOT_FOUND.findall(message)
    ]
    ldd = shutil.which("ldd")
    if ldd is not None:
        try:
            listing = subprocess.run([ldd, path], capture_output=True, text=True, timeout=60)
            output = listing.stdout + listing.stderr
        except (OSError, subprocess.TimeoutExpired):
            output = ""
        for line in output.splitlines():
            name, arrow, where = line.strip().partition("=>")
            if arrow and where.strip() == "not found":
                missing.append(name.strip())
            missing += [f"symbol version {v}" for v in _VERSION_NOT_FOUND.findall(line)]
    return list(dict.fromkeys(missing))


def _native_fix(missing: list[str]) -> str:
    if any(
        name.startswith("symbol version GLIBCXX") or name.startswith("symbol version CXXABI")
        for name in missing
    ):
        return (
            "the C++ runtime (libstdc++) is older than MindSpore needs: install a newer one (a newer OS or "
            "compiler runtime, or `conda install -c conda-forge libstdcxx-ng` in a conda environment)"
        )
    if any(name.startswith("symbol version GLIBC") for name in missing):
        return (
            "the C library (glibc) is older than MindSpore needs: use a newer Linux distribution or container"
        )
    if any(name.startswith("libmindspore") or name.startswith("_c_") for name in missing):
        return f"MindSpore's own libraries are missing: reinstall it: {_REINSTALL}"
    if any(re.match(r"lib(ge_|ascend|acl|hccl|runtime|graph|register)", name) for name in missing):
        return (
            "Ascend's CANN libraries are not on the library path: source CANN's set_env.sh (usually "
            "/usr/local/Ascend/ascend-toolkit/set_env.sh) before starting Python"
        )
    if missing:
        return (
            f"install the system package that provides {missing[0]}, or add the directory that holds it to "
            f"LD_LIBRARY_PATH"
        )
    return f"reinstall MindSpore: {_REINSTALL}"


def _check_native(report: Report, package: str, timeout: float) -> bool:
    """Whether the native libraries load."""
    paths = native_libraries(package)
    report.data["native"] = {"libraries": paths, "errors": {}}
    if not paths:
        report.add(
            NATIVE,
            "fail",
            f"neither lib/libmindspore.so nor _c_expression*.so is in {package}: the install is incomplete",
            fix=_REINSTALL,
        )
        return False
    result = run_probe("mindserve._cli.doctor:probe_native", {"paths": paths}, timeout=timeout)
    if not result.ok:
        report.add(
            NATIVE,
            "fail",
            f"loading {', '.join(os.path.basename(p) for p in paths)} failed: {result.failure}",
            fix=_REINSTALL,
            detail=result.stderr_tail(),
        )
        return False
    loads = True
    for path, error in result.value.items():
        if error is None:
            report.add(NATIVE, "ok", f"{path} loads")
            continue
        loads = False
        missing = missing_libraries(path, error)
        report.data["native"]["errors"][path] = {"error": error, "missing": missing}
        what = f"; missing: {', '.join(missing)}" if missing else ""
        report.add(NATIVE, "fail", f"{path} does not load: {error}{what}", fix=_native_fix(missing))
    return loads


# -- devices -------------------------------------------------------------------------


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU (its driver's device files exist)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _devices(ms: Any) -> dict[str, Any]:
    """In the child, once MindSpore imported: which device targets it can use, and one run
    of a network on the CPU."""
    import numpy as np

    from mindserve._execution import mindspore as _mindspore

    run: str | None = None
    try:  # the way a model runs: a network, on arrays, under mindserve's lock
        _mindspore.use_device("CPU", 0)
        (value,) = _mindspore.run_network(ms.nn.ReLU(), (np.array([-1.0, 2.0], np.float32),))
        run = None if value.tolist() == [0.0, 2.0] else f"relu([-1, 2]) gave {value.tolist()}"
    except Exception as exc:
        run = f"{type(exc).__name__}: {_mindspore.first_line(exc)}"
    hal: Any = getattr(ms, "hal", None)
    targets: dict[str, Any] = {}
    for target in ("CPU", "GPU", "Ascend"):
        try:
            targets[target] = bool(hal.is_available(target)) if hasattr(hal, "is_available") else None
        except Exception as exc:  # a plugin that fails to load says so here
            targets[target] = f"{type(exc).__name__}: {_mindspore.first_line(exc)}"
    return {"available": targets, "cpu_run_error": run}


def _check_devices(report: Report, value: dict[str, Any], stderr: str) -> None:
    from mindserve._execution.mindspore import ascend_present

    present = {"CPU": True, "GPU": gpu_present(), "Ascend": ascend_present()}
    report.data["devices"] = {"present": present, **value}
    if value["cpu_run_error"] is None:
        report.add(DEVICES, "ok", "CPU: MindSpore runs a network on it")
    else:
        report.add(
            DEVICES, "fail", f"CPU: MindSpore cannot run a network: {value['cpu_run_error']}", fix=_REINSTALL
        )
    reasons = [line.strip() for line in stderr.splitlines() if "cannot open shared object file" in line]
    for target in ("GPU", "Ascend"):
        available = value["available"][target]
        if available is True:
            report.add(DEVICES, "ok", f"{target}: MindSpore can use it")
        elif present[target]:
            package = "mindspore (a build for GPU/CUDA)" if target == "GPU" else "mindspore with CANN"
            report.add(
                DEVICES,
                "fail",
                f"{target}: this machine has one, but MindSpore cannot use it"
                + (f" ({available})" if isinstance(available, str) else ""),
                fix=(
                    f"install {package} matching the driver, and "
                    + (
                        "source CANN's set_env.sh before starting Python"
                        if target == "Ascend"
                        else "put CUDA's libraries on LD_LIBRARY_PATH"
                    )
                ),
                detail=sorted(set(reasons)),
            )
        else:
            report.add(DEVICES, "note", f"{target}: none on this machine")
    default = "Ascend" if present["Ascend"] else "CPU"
    report.add(
        DEVICES, "note", f"Runtime() uses {default}:0 unless given device_target=... and device_id=..."
    )


# -- threads -------------------------------------------------------------------------


def _check_threads(report: Report) -> None:
    cpus = os.cpu_count() or 1
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(cpus))
    omp = os.environ.get("OMP_NUM_THREADS")
    report.data["threads"] = {"cpu_count": cpus, "affinity": allowed, "OMP_NUM_THREADS": omp}
    report.add(
        THREADS,
        "note",
        f"{cpus} CPUs, this process may run on {len(allowed)} of them ({_ranges(allowed)})",
    )
    if omp is None:
        report.add(
            THREADS, "note", "OMP_NUM_THREADS is not set: OpenMP uses one thread per CPU it may run on"
        )
        return
    try:
        threads = int(omp.split(",")[0])
    except ValueError:
        threads = 0
    if threads < 1:
        report.add(
            THREADS,
            "fail",
            f"OMP_NUM_THREADS={omp!r} is not a positive number of threads",
            fix=f"export OMP_NUM_THREADS={len(allowed)} (or unset it)",
        )
    elif threads > len(allowed):
        report.add(
            THREADS,
            "warn",
            f"OMP_NUM_THREADS={threads} is more than the {len(allowed)} CPUs this process may run on: "
            f"its threads will take turns on the same cores, which slows MindSpore's CPU kernels down",
            fix=f"export OMP_NUM_THREADS={len(allowed)}",
        )
    else:
        report.add(THREADS, "ok", f"OMP_NUM_THREADS={threads}")


def _ranges(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2,5'``."""
    groups: list[list[int]] = []
    for cpu in cpus:
        if groups and groups[-1][1] + 1 == cpu:
            groups[-1][1] = cpu
        else:
            groups.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in groups) or "none"

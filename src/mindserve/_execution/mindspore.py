"""Everything that touches the ``mindspore`` package directly.

MindSpore is imported lazily, the first time a MindSpore model loads, so that
``import mindserve`` stays fast and works where MindSpore is missing.

Two facts measured on MindSpore 2.10 shape this module: calling one network from two
threads at once crashes the process (segmentation fault), and calling two different
networks from two threads at once deadlocks. So every call into MindSpore -- loading,
compiling, running, converting tensors -- holds one process-wide lock.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import sys
import threading
import warnings
from types import ModuleType
from typing import Any

import numpy as np

from mindserve._errors import (
    DeviceError,
    MindSporeUnavailableError,
    MindSporeVersionWarning,
    meaningful_line,
)
from mindserve._execution import signals
from mindserve._execution.memory import limit_arenas
from mindserve._requirements import (
    MINDSPORE_BELOW,
    MINDSPORE_MIN,
    MINDSPORE_REQUIREMENT,
    TESTED_MINDSPORE_VERSIONS,
)
from mindserve._values import TensorSpec

_LOCK = threading.RLock()
_import_lock = threading.Lock()
_module: ModuleType | None = None
_device: tuple[str, int] | None = None

#: Device names as MindSpore spells them, by their lower-case form.
DEVICE_TARGETS = {"cpu": "CPU", "ascend": "Ascend", "gpu": "GPU"}

# MindIR's TensorProto.DataType numbers -> numpy dtypes (types numpy lacks map to None).
_MINDIR_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    17: "float64",
}


def mindspore_lock() -> threading.RLock:
    """The lock every call into MindSpore holds.

    Code of your own that calls MindSpore in a process where a mindserve runtime is
    serving should hold it too: MindSpore crashes or deadlocks when two threads call
    into it at once.
    """
    return _LOCK


def import_mindspore() -> ModuleType:
    """Import MindSpore once, turning a missing or broken install into a clear error."""
    global _module
    with _import_lock:
        if _module is not None:
            return _module
        hint = f"Hint: install it with: pip install '{MINDSPORE_REQUIREMENT}'"
        try:
            import mindspore
        except ModuleNotFoundError as exc:
            if exc.name not in (None, "mindspore"):
                raise MindSporeUnavailableError(
                    f"MindSpore is installed but cannot import its dependency '{exc.name}': {exc}. {hint}"
                ) from exc
            raise MindSporeUnavailableError(
                f"mindserve needs MindSpore to load this model, and MindSpore is not installed. {hint}"
            ) from exc
        except Exception as exc:
            raise MindSporeUnavailableError(
                f"MindSpore is installed but fails to import ({type(exc).__name__}: {exc}). "
                f"Hint: reinstall it with: pip install --force-reinstall '{MINDSPORE_REQUIREMENT}'"
            ) from exc
        check_version(getattr(mindspore, "__version__", "unknown"))
        _module = mindspore
        return mindspore


def parse_version(text: str) -> tuple[int, ...] | None:
    """``'2.10.0rc1'`` -> ``(2, 10, 0)``; ``None`` when there is no leading number."""
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.group(0).split("."))


def version_supported(text: str) -> bool:
    """Whether MindSpore version ``text`` is inside the supported range (no warning)."""
    version = parse_version(text)
    return version is not None and MINDSPORE_MIN <= version[:2] < MINDSPORE_BELOW


def check_version(text: str) -> bool:
    """Warn with :class:`MindSporeVersionWarning` when ``text`` is outside the supported range.

    Returns whether the version is supported.
    """
    if version_supported(text):
        return True
    warnings.warn(
        f"MindSpore {text} is outside the range mindserve supports ({MINDSPORE_REQUIREMENT}; "
        f"tested with {', '.join(TESTED_MINDSPORE_VERSIONS)}). Models may fail to load or run. "
        f"Hint: pip install '{MINDSPORE_REQUIREMENT}'",
        MindSporeVersionWarning,
        stacklevel=3,
    )
    return False


def normalize_device_target(target: str | None) -> str | None:
    """Spell a device name as MindSpore does; ``None`` stays ``None`` (chosen later)."""
    if target is None:
        return None
    if not isinstance(target, str) or target.lower() not in DEVICE_TARGETS:
        raise DeviceError(
            f"device_target must be one of {sorted(DEVICE_TARGETS.values())} or None "
            f"(Ascend when present, else CPU); got {target!r}"
        )
    return DEVICE_TARGETS[target.lower()]


def ascend_present() -> bool:
    """Whether this machine has an Ascend device (its driver's device files exist)."""
    return os.path.exists("/dev/davinci_manager") or bool(glob.glob("/dev/davinci[0-9]*"))


def use_device(target: str | None, device_id: int) -> tuple[str, int]:
    """Point MindSpore at a device, once per process; later calls must agree."""
    global _device
    chosen = target or ("Ascend" if ascend_present() else "CPU")
    with _LOCK:
        signals.capture_python_sigint()  # before MindSpore runs anything: see .signals
        if _device is not None:
            if target is not None and (chosen, device_id) != _device:
                raise DeviceError(
                    f"this process already runs MindSpore on {_device[0]}:{_device[1]}, and "
                    f"MindSpore's device is process-wide; got a request for {chosen}:{device_id}. "
                    f"Hint: use one process per device."
                )
            return _device
        limit_arenas()  # before MindSpore's first model: see mindserve._execution.memory
        ms = import_mindspore()
        try:
            if hasattr(ms, "set_device"):
                ms.set_device(chosen, device_id)
            else:  # MindSpore before 2.5
                ms.set_context(device_target=chosen, device_id=device_id)
        except Exception as exc:  # MindSpore raises RuntimeError or ValueError
            # Once MindSpore has run a kernel, its device is fixed: use it if it fits.
            current = _current_device(ms)
            if current is None or (target is not None and current != (chosen, device_id)):
                raise DeviceError(
                    f"MindSpore cannot use device {chosen}:{device_id}: {first_line(exc)}"
                ) from exc
            chosen, device_id = current
        _device = (chosen, device_id)
        return _device


def _current_device(ms: ModuleType) -> tuple[str, int] | None:
    """The device MindSpore is set to, or None if it cannot say."""
    try:
        return str(ms.get_context("device_target")), int(ms.get_context("device_id"))
    except Exception:  # a MindSpore without these context keys
        return None


def first_line(exc: BaseException) -> str:
    """The first meaningful line of an exception's message (MindSpore frames its messages
    and appends C++ stacks)."""
    return meaningful_line(str(exc)) or type(exc).__name__


def read_mindir_signature(path: str, dec_key: bytes | None, dec_mode: str) -> tuple[TensorSpec, ...] | None:
    """The input specs written in a MindIR file, or ``None`` if unreadable.

    The file is parsed with MindSpore's own protobuf schema; an encrypted file is
    decrypted first. Call only after :func:`load_mindir` succeeded on the same file.
    """
    try:
        inputs, _ = read_mindir_io(path, dec_key, dec_mode)
    except Exception:
        return None
    if inputs is None:
        return None
    return tuple(spec for _, spec in inputs)


def mindir_encrypted(path: str) -> bool:
    """Whether a MindIR file is encrypted (MindSpore's own test; imports MindSpore)."""
    import_mindspore()
    from mindspore._c_expression import _is_cipher_file

    return bool(_is_cipher_file(path))


def read_mindir_io(
    path: str, dec_key: bytes | None, dec_mode: str
) -> tuple[tuple[tuple[str, TensorSpec], ...] | None, tuple[TensorSpec, ...] | None]:
    """The named inputs and the outputs a MindIR file declares (each ``None`` when the file
    does not say in a form mindserve reads); raises when the file cannot be parsed.

    An encrypted file is decrypted with ``dec_key`` first (imports MindSpore).
    """
    from mindspore.train import mind_ir_pb2

    if dec_key is not None:
        import mindspore._c_expression as c_expression

        data = c_expression._decrypt(path, dec_key, len(dec_key), dec_mode)
        if data is None:
            raise ValueError(f"cannot decrypt {path!r} with this key and mode {dec_mode!r}")
    else:
        with open(path, "rb") as handle:
            data = handle.read()
    proto = mind_ir_pb2.ModelProto()
    proto.ParseFromString(data)
    if not proto.HasField("graph") or not (proto.graph.node or proto.graph.output):
        # protobuf parses an empty file (or a few stray bytes) as an empty model
        raise ValueError(f"the file holds no MindIR graph ({len(data)} bytes)")
    inputs: tuple[tuple[str, TensorSpec], ...] | None = ()
    for value in proto.graph.input:
        if len(value.tensor) != 1:
            inputs = None
            break
        inputs += ((value.name.rpartition(":")[2], _tensor_spec(value.tensor[0])),)  # type: ignore[operator]
    outputs: list[TensorSpec] | None = []
    for value in proto.graph.output:
        found = [_tensor_spec(t) for t in value.tensor] or _attribute_tensors(value.attr_info)
        if not found:
            outputs = None
            break
        outputs += found  # type: ignore[operator]
    return inputs, None if outputs is None else tuple(outputs)


def _tensor_spec(tensor: Any) -> TensorSpec:
    dtype = _MINDIR_DTYPES.get(tensor.data_type)
    return TensorSpec(
        tuple(None if d < 0 else int(d) for d in tensor.dims), np.dtype(dtype) if dtype else None
    )


def _attribute_tensors(attribute: Any) -> list[TensorSpec]:
    """The tensors of an output written as an attribute (a tuple of tensors), in order."""
    found = [_tensor_spec(t) for t in attribute.tensors]
    for value in attribute.values:
        found += _attribute_tensors(value)
    return found


def load_mindir(path: str, dec_key: bytes | None, dec_mode: str) -> Any:
    """Load a MindIR file into a callable ``nn.GraphCell`` (raises MindSpore's errors)."""
    ms = import_mindspore()
    with _LOCK:
        try:
            if dec_key is None:
                graph = ms.load(path)
            else:
                graph = ms.load(path, dec_key=dec_key, dec_mode=dec_mode)
            return ms.nn.GraphCell(graph)
        finally:
            signals.keep_python_sigint()


def run_network(
    network: Any, arrays: tuple[np.ndarray, ...], *, settle: bool = False
) -> tuple[np.ndarray, ...]:
    """Run a Cell or GraphCell on numpy arrays; return its outputs as numpy arrays.

    MindSpore installs its own SIGINT handler at every graph run: Python's is put back after
    each (see :mod:`.signals`); ``settle`` (a network's first runs, which may start
    MindSpore's threads) puts it back again over the next seconds.
    """
    ms = _module or import_mindspore()
    with _LOCK:
        try:
            outputs = network(*(ms.Tensor(a) for a in arrays))
            if not isinstance(outputs, (tuple, list)):
                outputs = (outputs,)
            return tuple(_to_numpy(o) for o in outputs)
        finally:
            signals.keep_python_sigint()
            if settle:
                signals.settle()


def parameter_dtype(network: Any) -> np.dtype | None:
    """The one floating dtype of a network's floating parameters (``None`` when they have
    none, or several)."""
    ms = _module or import_mindspore()
    found = set()
    with _LOCK:
        try:
            for parameter in network.get_parameters():
                dtype = np.dtype(ms.dtype_to_nptype(parameter.dtype))
                if dtype.kind == "f":
                    found.add(dtype)
        except Exception:  # a network without parameters to list
            return None
    return found.pop() if len(found) == 1 else None


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "asnumpy"):
        return value.asnumpy()
    return np.asarray(value)


def primitive_reducer(obj: Any) -> tuple[Any, ...] | None:
    """How to pickle ``obj`` if it is a MindSpore primitive (``None`` otherwise), for
    sending an ``nn.Cell`` to worker processes.

    Primitives (the operators inside MindSpore's layers, ``Reshape``, ``MatMul``...) do
    not pickle; each is rebuilt from the arguments it was made with (``init_attrs``), once
    the rebuilt one is checked to have the same attributes. Looks only when MindSpore is
    already imported.
    """
    module = sys.modules.get("mindspore.ops.primitive")
    primitive = getattr(module, "Primitive", None)
    if primitive is None or not isinstance(obj, primitive):
        return None
    arguments = dict(getattr(obj, "init_attrs", None) or {})
    try:
        same = _rebuild_primitive(type(obj), arguments).attrs == obj.attrs
    except Exception:
        same = False
    if not same:
        raise pickle.PicklingError(
            f"MindSpore primitive {type(obj).__name__} cannot be rebuilt from its constructor arguments"
        )
    return (_rebuild_primitive, (type(obj), arguments))


def _rebuild_primitive(cls: type, arguments: dict[str, Any]) -> Any:
    return cls(**arguments)

"""MindSpore Serving's model context and device infos: readable, and checked as there.

``declare_model(..., context=...)`` accepts them; mindserve runs MindIR files with MindSpore
on the runtime's device, so their settings (meant for MindSpore Lite and Ascend ACL) are
kept for reading, not applied. Bad values raise ``RuntimeError`` with MindSpore Serving's
wording, so a config that is wrong there is wrong here too.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from mindserve.compat._checks import check_bool, check_int, check_str, int_tuple

logger = logging.getLogger("mindserve.compat")


def _check_choice(name: str, value: Any, choices: tuple[str, ...], refusal: str) -> None:
    check_str(name, value)
    if value not in choices:
        raise RuntimeError(f"{refusal}, actually given '{value}'" if "Ascend" in refusal else refusal)


def _apply(kwargs: dict[str, Any], setters: dict[str, Callable[[Any], None]], unsupported: str) -> None:
    for key, value in kwargs.items():
        if key not in setters:
            raise RuntimeError(unsupported + key)
        setters[key](value)


class _ModelContext:
    """What ``Context.model_context`` holds (MindSpore Serving's ``ModelContext_``)."""

    def __init__(self) -> None:
        self.thread_num = -1
        self.thread_affinity_core_list: list[int] = []
        self.enable_parallel = -1
        self.device_list: list[dict[str, str]] = []

    def append_device_info(self, info: dict[str, str]) -> None:
        self.device_list.append(info)

    def __repr__(self) -> str:
        return (
            f"thread_num: {self.thread_num}, thread_affinity_core_list: {self.thread_affinity_core_list}, "
            f"enable_parallel: {self.enable_parallel}, device_list, {self.device_list}"
        )


class DeviceInfoContext:
    """The base of the device infos."""

    def _as_context_map(self) -> dict[str, str]:
        raise NotImplementedError


class Context:
    """Model context: ``thread_num``, ``thread_affinity_core_list``, ``enable_parallel``, and
    one device info per device type (``append_device_info``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.model_context = _ModelContext()
        self.device_types: list[str] = []
        _apply(
            kwargs,
            {
                "thread_num": self._set_thread_num,
                "thread_affinity_core_list": self._set_thread_affinity_core_list,
                "enable_parallel": self._set_enable_parallel,
            },
            "Set context failed, unsupported option ",
        )

    def append_device_info(self, device_info: Any) -> None:
        if not isinstance(device_info, DeviceInfoContext):
            raise RuntimeError(
                f"Parameter 'device_info' should instance of CPUDeviceInfo, GPUDeviceInfo, or AscendDeviceInfo, "
                f"but actually {type(device_info)}"
            )
        info = device_info._as_context_map()
        device_type = info["device_type"]
        if device_type in self.device_types:
            raise RuntimeError(f"Device info of type {device_type} has already been appended")
        self.device_types.append(device_type)
        self.model_context.append_device_info(info)

    def _set_thread_num(self, value: Any) -> None:
        check_int("thread_num", value, 1)
        self.model_context.thread_num = value

    def _set_thread_affinity_core_list(self, value: Any) -> None:
        cores = int_tuple("thread_affinity_core_list", value, 0, single=False)
        self.model_context.thread_affinity_core_list = list(cores)

    def _set_enable_parallel(self, value: Any) -> None:
        check_bool("enable_parallel", value)
        self.model_context.enable_parallel = 1 if value else 0

    def __str__(self) -> str:
        return repr(self.model_context)


class _PrecisionDeviceInfo(DeviceInfoContext):
    _device = ""

    def __init__(self, **kwargs: Any) -> None:
        self.precision_mode = ""
        _apply(
            kwargs,
            {"precision_mode": self._set_precision_mode},
            f"Set {self._device} device info failed, unsupported option ",
        )
        self.context_map = self._as_context_map()

    def _set_precision_mode(self, value: Any) -> None:
        _check_choice(
            "precision_mode",
            value,
            ("origin", "fp16"),
            f"{self._device.capitalize()} device info 'precision_mode' can only be 'origin', 'fp16'. given '{value}'",
        )
        self.precision_mode = value

    def _as_context_map(self) -> dict[str, str]:
        info = {"precision_mode": self.precision_mode} if self.precision_mode else {}
        info["device_type"] = self._device
        return info


class CPUDeviceInfo(_PrecisionDeviceInfo):
    """CPU device info: ``precision_mode`` ("origin" or "fp16")."""

    _device = "cpu"


class GPUDeviceInfo(_PrecisionDeviceInfo):
    """GPU device info: ``precision_mode`` ("origin" or "fp16")."""

    _device = "gpu"


#: Ascend options with a fixed set of values: (values, what MindSpore Serving says otherwise).
_ASCEND_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "input_format": (
        ("ND", "NCHW", "NHWC", "CHWN", "NC1HWC0", "NHWC1C0"),
        "Ascend device info 'input_format' can only be 'ND', 'NCHW', 'NHWC', 'CHWN', 'NC1HWC0', or 'NHWC1C0'",
    ),
    "output_type": (
        ("FP32", "FP16", "UINT8"),
        "Ascend device info 'op_select_impl_mode' can only be 'FP32'(default), 'FP16' or 'UINT8'",
    ),
    "precision_mode": (
        ("force_fp16", "allow_fp32_to_fp16", "must_keep_origin_dtype", "allow_mix_precision"),
        "Ascend device info 'precision_mode' can only be 'force_fp16'(default), 'allow_fp32_to_fp16' "
        "'must_keep_origin_dtype' or 'allow_mix_precision'",
    ),
    "op_select_impl_mode": (
        ("high_performance", "high_precision"),
        "Ascend device info 'op_select_impl_mode' can only be 'high_performance'(default) or 'high_precision'",
    ),
    "buffer_optimize_mode": (
        ("l1_optimize", "l2_optimize", "off_optimize", "l1_and_l2_optimize"),
        "Ascend device info 'buffer_optimize_mode' can only be 'off_optimize'(default), 'l1_optimize', "
        "'l2_optimize' or 'l1_and_l2_optimize'",
    ),
}
_ASCEND_PATHS = ("insert_op_cfg_path", "input_shape", "fusion_switch_config_path")


class AscendDeviceInfo(DeviceInfoContext):
    """Ascend device info (ACL options), checked as MindSpore Serving checks them."""

    _ORDER = (
        "insert_op_cfg_path",
        "input_format",
        "input_shape",
        "output_type",
        "precision_mode",
        "op_select_impl_mode",
        "buffer_optimize_mode",
        "fusion_switch_config_path",
    )

    def __init__(self, **kwargs: Any) -> None:
        for name in self._ORDER:
            setattr(self, name, "")
        for key, value in kwargs.items():
            if key not in self._ORDER:
                raise RuntimeError("Set ascend device info failed, unsupported parameter " + key)
            if key in _ASCEND_CHOICES:
                choices, refusal = _ASCEND_CHOICES[key]
                _check_choice(key, value, choices, refusal)
            else:
                check_str(key, value)
            setattr(self, key, value)
        self.context_map = self._as_context_map()

    def _as_context_map(self) -> dict[str, str]:
        info = {name: getattr(self, name) for name in self._ORDER if getattr(self, name)}
        info["device_type"] = "ascend"
        return info


class _DeprecatedOptions:
    """MindSpore Serving 1.5's options, deprecated in 1.6 for a device info: ``.context``."""

    _info: type[DeviceInfoContext]

    def __init__(self, **kwargs: Any) -> None:
        logger.warning(
            f"'{type(self).__name__}' is deprecated from version 1.6.0 and will be removed in a future version, "
            f"use 'mindspore_serving.server.register.{self._info.__name__}' instead."
        )
        self.context = Context()
        self.context.append_device_info(self._info(**kwargs))


class AclOptions(_DeprecatedOptions):
    """Deprecated in MindSpore Serving 1.6 for :class:`AscendDeviceInfo`: ``.context``."""

    _info = AscendDeviceInfo


class GpuOptions(_DeprecatedOptions):
    """Deprecated in MindSpore Serving 1.6 for :class:`GPUDeviceInfo`: ``.context``."""

    _info = GPUDeviceInfo

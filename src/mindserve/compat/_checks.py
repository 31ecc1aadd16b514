"""MindSpore Serving's parameter checks (its ``server/common/check_type.py``), restated once
for every part of ``mindserve.compat``, with its wording.

Each raises ``error`` (``RuntimeError``, as MindSpore Serving does; the register module
passes :class:`~mindserve.DefinitionError`, which a load turns into a ``LoadError``).
"""

from __future__ import annotations

from typing import Any

from mindserve._errors import is_int


def check_str(name: str, value: Any, error: type[Exception] = RuntimeError) -> None:
    """A non-empty str."""
    if not isinstance(value, str):
        raise error(f"Parameter '{name}' should be str, but actually {type(value)}")
    if not value:
        raise error(f"Parameter '{name}' should not be empty str")


def check_bool(name: str, value: Any, error: type[Exception] = RuntimeError) -> None:
    if not isinstance(value, bool):
        raise error(f"Parameter '{name}' should be bool, but actually {type(value)}")


def check_int(
    name: str,
    value: Any,
    minimum: int,
    maximum: int | None = None,
    *,
    item: bool = False,
    error: type[Exception] = RuntimeError,
) -> None:
    """An int (not a bool) in ``[minimum, maximum]``; ``item``: one item of a list ``name``."""
    prefix = f"The item value '{value}' in parameter '{name}'" if item else f"Parameter '{name}'"
    if not is_int(value):
        raise error(f"{prefix} should be int, but actually {type(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        if maximum is not None:
            raise error(f"{prefix} should be in range [{minimum},{maximum}]")
        raise error(f"{prefix} should be >= {minimum}")


def int_tuple(
    name: str, value: Any, minimum: int, *, single: bool, error: type[Exception] = RuntimeError
) -> tuple[int, ...]:
    """A tuple/list of distinct ints >= ``minimum`` (``single``: a bare int too), as a tuple."""
    if single and isinstance(value, int):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        allowed = "int or tuple/list of int" if single else "tuple/list of int"
        raise error(f"Parameter '{name}' should be {allowed}, but actually {type(value)}")
    items: list[int] = []
    for item in value:
        if item in items:
            raise error(f"The item value '{item}' in parameter '{name}' should not be repeated")
        check_int(name, item, minimum, item=True, error=error)
        items.append(item)
    return tuple(items)


def str_list(name: str, value: Any, error: type[Exception] = RuntimeError) -> list[str]:
    """A str, or a tuple/list of distinct non-empty strs, as a list."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise error(f"Parameter '{name}' should be str or tuple/list of str, but actually {type(value)}")
    items: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise error(f"The item of parameter '{name}' should be str, but actually {type(item)}")
        if not item:
            raise error(f"The item of parameter '{name}' should not be empty str")
        if item in items:
            raise error(f"The item value '{item}' in parameter '{name}' should not be repeated")
        items.append(item)
    return items

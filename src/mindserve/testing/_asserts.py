"""Assertions on per-instance errors, with messages that show every instance that differs."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

from mindserve._errors import ArgumentTypeError, InferenceError, InstanceError, InvalidArgumentError, is_int

#: What an instance is expected to fail with: an error class, or a class and a regular
#: expression its message must match (``re.search``).
Expected = Union[type[BaseException], tuple[type[BaseException], str]]


def _checked(expected: Mapping[int, Expected]) -> dict[int, tuple[type[BaseException], str | None]]:
    if not isinstance(expected, Mapping):
        raise ArgumentTypeError(
            f"expected errors must be a dict of instance index to error class; got {type(expected).__name__}"
        )
    checked = {}
    for index, want in expected.items():
        if not is_int(index):
            raise ArgumentTypeError(f"an instance index must be an int; got {index!r}")
        if index < 0:
            raise InvalidArgumentError(f"an instance index must be >= 0; got {index}")
        pattern = None
        if isinstance(want, tuple):
            if len(want) != 2 or not isinstance(want[1], str):
                raise ArgumentTypeError(
                    f"instance {index}: expected an error class or (error class, pattern); got {want!r}"
                )
            want, pattern = want
        if not isinstance(want, type) or not issubclass(want, BaseException):
            raise ArgumentTypeError(
                f"instance {index}: expected an error class such as mindserve.InvalidInputError; got {want!r}"
            )
        checked[index] = (want, pattern)
    return checked


def _results(outcome: Any) -> list[Any]:
    if isinstance(outcome, InferenceError):
        return list(outcome.results)
    if isinstance(outcome, BaseException):
        raise AssertionError(
            f"expected per-instance errors (an InferenceError); the whole call failed with "
            f"{type(outcome).__name__}: {outcome}"
        ) from outcome
    if isinstance(outcome, Sequence) and not isinstance(outcome, (str, bytes)):
        return list(outcome)
    raise ArgumentTypeError(
        f"assert_instance_errors takes an InferenceError or the list that infer(..., "
        f"return_exceptions=True) returns; got {type(outcome).__name__}"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(want: type[BaseException], pattern: str | None) -> str:
    return want.__name__ + (f" matching {pattern!r}" if pattern is not None else "")


def assert_instance_errors(outcome: Any, expected: Mapping[int, Expected]) -> dict[int, InstanceError]:
    """Assert that exactly the instances in ``expected`` failed, each with its error.

    ``outcome`` is the :class:`~mindserve.InferenceError` that ``infer`` raised, or the
    list that ``infer(..., return_exceptions=True)`` returned. ``expected`` maps an
    instance's index to an error class (``mindserve.InvalidInputError``), or to a class and
    a regular expression that must match its message (``re.search``). Every other instance
    must have succeeded. Returns the errors by index, for further checks.

    Raises ``AssertionError`` listing every instance that differs; a bad ``expected`` or
    ``outcome`` raises :class:`~mindserve.ArgumentTypeError` or
    :class:`~mindserve.InvalidArgumentError`.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this function's
    wanted = _checked(expected)
    results = _results(outcome)
    problems = []
    for index in sorted(i for i in wanted if i >= len(results)):
        problems.append(
            f"instance {index}: expected {_describe(*wanted[index])}, but the request has "
            f"{len(results)} instances"
        )
    errors: dict[int, InstanceError] = {}
    for index, result in enumerate(results):
        failed = isinstance(result, BaseException)
        if failed:
            errors[index] = result
        if index not in wanted:
            if failed:
                problems.append(
                    f"instance {index}: expected success, failed with {type(result).__name__}: {result}"
                )
            continue
        want, pattern = wanted[index]
        if not failed:
            problems.append(
                f"instance {index}: expected {_describe(want, pattern)}, succeeded with {_short(result)}"
            )
        elif not isinstance(result, want):
            problems.append(
                f"instance {index}: expected {_describe(want, pattern)}, failed with "
                f"{type(result).__name__}: {result}"
            )
        elif pattern is not None and not re.search(pattern, str(result)):
            problems.append(
                f"instance {index}: expected {_describe(want, pattern)}, failed with "
                f"{type(result).__name__} whose message does not match: {result}"
            )
    if problems:
        raise AssertionError(
            f"{len(problems)} of {len(results)} instances differ from what was expected:\n  "
            + "\n  ".join(problems)
        )
    return errors


class CaughtErrors:
    """What :func:`raises_instance_errors` caught: ``errors`` by index, and ``results``."""

    def __init__(self) -> None:
        self.errors: dict[int, InstanceError] = {}
        self.results: list[Any] = []

    def __repr__(self) -> str:
        return f"<CaughtErrors {sorted(self.errors)} of {len(self.results)} instances>"


@contextlib.contextmanager
def raises_instance_errors(expected: Mapping[int, Expected]) -> Iterator[CaughtErrors]:
    """Assert that the block raises an :class:`~mindserve.InferenceError` whose failed
    instances are exactly those in ``expected`` (as :func:`assert_instance_errors`)::

        with raises_instance_errors({1: mindserve.InvalidInputError}) as caught:
            rt.infer("mlp", "predict", instances)
        assert caught.results[0]["y"].shape == (4,)
    """
    __tracebackhide__ = True
    _checked(expected)  # a bad argument fails before the block runs
    caught = CaughtErrors()
    try:
        yield caught
    except InferenceError as exc:
        caught.errors = assert_instance_errors(exc, expected)
        caught.results = list(exc.results)
        return
    raise AssertionError(
        f"expected an InferenceError with instances {sorted(expected)} failed; the block raised none"
    )

"""Every error mindserve raises, in one place.

Each error also derives from the builtin that fits it, so ``except ValueError`` or
``except LookupError`` keep working::

    MindServeError
    ├── DefinitionError (ValueError)          a servable is defined wrongly (raised at decoration time)
    ├── InvalidArgumentError (ValueError)     an argument of a runtime method has a wrong value
    ├── ArgumentTypeError (TypeError)         an argument of a runtime method has a wrong type
    ├── NotFoundError (LookupError)           a name or version that is not running
    │   ├── ServableNotFoundError
    │   ├── MethodNotFoundError
    │   └── VersionNotFoundError
    ├── MindSporeUnavailableError (ImportError)   MindSpore is missing or fails to import
    ├── ExtraUnavailableError (ImportError)   an optional extra (mindserve[http]) is not installed
    ├── DeviceError (RuntimeError)            the device cannot be used (already set to another one, ...)
    ├── LoadError (RuntimeError)              a model or a version failed to load; nothing running stops
    ├── WorkerError (RuntimeError)            a worker process died under a batch, or none is left; no shared memory
    ├── CallError                             a whole call failed (.servable, .version, .method)
    │   ├── RuntimeClosedError (RuntimeError)     the runtime was closed (or inherited by fork())
    │   ├── OverloadedError (RuntimeError)        a model's queue is full; retry later
    │   └── DeadlineExceededError (TimeoutError)  the call's timeout passed before it completed
    ├── InstanceError                         one instance of a request failed; the others are unaffected
    │   ├── InvalidInputError (ValueError)    a missing, unknown or ill-typed input value
    │   ├── StageError (RuntimeError)         a Python stage raised or returned a wrong result
    │   └── ModelError (RuntimeError)         the model failed on the batch holding this instance
    └── InferenceError                        a request in which some instances failed

    MindSporeVersionWarning (UserWarning)     MindSpore's version is outside the tested range
    MindServeWarning (UserWarning)            a definition or load problem to fix (shown when logging is not configured)
    RuntimeNotClosedWarning (ResourceWarning) a Runtime was dropped without close(); mindserve closed it
"""

from __future__ import annotations

from typing import Any, TypeGuard

__all__ = [
    "ArgumentTypeError",
    "CallError",
    "DeadlineExceededError",
    "DefinitionError",
    "DeviceError",
    "ExtraUnavailableError",
    "InferenceError",
    "InstanceError",
    "InvalidArgumentError",
    "InvalidInputError",
    "LoadError",
    "MethodNotFoundError",
    "MindServeError",
    "MindServeWarning",
    "MindSporeUnavailableError",
    "MindSporeVersionWarning",
    "ModelError",
    "NotFoundError",
    "OverloadedError",
    "RuntimeClosedError",
    "RuntimeNotClosedWarning",
    "ServableNotFoundError",
    "StageError",
    "VersionNotFoundError",
    "WorkerError",
]


def is_int(value: object, at_least: int | None = None) -> TypeGuard[int]:
    """Whether ``value`` is an int (``True`` and ``False`` are not, though Python makes
    ``bool`` a subclass of ``int``), and at least ``at_least`` when given: the check behind
    every "must be an int >= n" message."""
    return isinstance(value, int) and not isinstance(value, bool) and (at_least is None or value >= at_least)


def refuse_async(function: object, what: str) -> None:
    """Raise :class:`DefinitionError` if ``function`` is an ``async def`` function: it would
    return a coroutine object as its result."""
    import inspect

    method = type(function).__call__  # a callable object's own __call__ may be async too
    if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(method):
        raise DefinitionError(
            f"{what} is an async def function; stages and models run in mindserve's threads and "
            f"must return their results. Hint: make it a plain def (run async I/O with "
            f"asyncio.run inside it), or await it in your own code before calling the runtime."
        )


def describe(exc: BaseException, *, first_line: bool = False) -> str:
    """``ValueError: bad value``, for a message about an exception a user's code raised.

    Never raises, even for an exception whose ``str()`` raises (it says so instead); the
    type alone when the message is empty. ``first_line``: only the first meaningful line
    (:func:`meaningful_line`: MindSpore frames its messages and appends C++ stacks).
    """
    kind = type(exc).__name__
    try:
        text = str(exc)
    except BaseException as problem:  # a user's __str__ may raise anything
        return f"{kind} (its str() raised {type(problem).__name__})"
    if first_line:
        text = meaningful_line(text)
    return f"{kind}: {text}" if text else kind


def meaningful_line(text: str) -> str:
    """The first line of a message that says something: MindSpore frames its errors
    (``-----`` rules around ``- Memory not enough:`` headings) and appends C++ stacks, so
    rules and headings are skipped (a heading is kept only when nothing else is there)."""
    heading = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or not line.strip("-=").strip():
            continue
        if line.startswith("- ") and line.endswith(":"):
            heading = heading or line
            continue
        return line
    return heading


def counted(count: int, noun: str) -> str:
    """``1 instance``, ``2 instances``: a count with its noun, for messages."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class MindServeError(Exception):
    """Base class of every error raised by mindserve."""


class DefinitionError(MindServeError, ValueError):
    """A servable, model, stage or method is defined wrongly."""


class InvalidArgumentError(MindServeError, ValueError):
    """An argument of a runtime method has a wrong value (a negative timeout, ...)."""


class ArgumentTypeError(MindServeError, TypeError):
    """An argument of a runtime method has a wrong type (a str where a number goes, ...)."""


class NotFoundError(MindServeError, LookupError):
    """A servable, method or version that is not running was asked for."""


class ServableNotFoundError(NotFoundError):
    """No servable of that name is running."""


class MethodNotFoundError(NotFoundError):
    """The servable has no method of that name."""


class VersionNotFoundError(NotFoundError):
    """The servable has no such version (on disk, or running)."""


class MindSporeUnavailableError(MindServeError, ImportError):
    """MindSpore is not installed, or is installed but fails to import."""


class ExtraUnavailableError(MindServeError, ImportError):
    """A feature needs an optional extra that is not installed (``pip install 'mindserve[http]'``)."""


class DeviceError(MindServeError, RuntimeError):
    """The requested device cannot be used by this process."""


class LoadError(MindServeError, RuntimeError):
    """A model or a servable version failed to load.

    Whatever was running before keeps running.
    """


class WorkerError(MindServeError, RuntimeError):
    """A worker process died under a batch more than once, or no worker process is left; or
    a batch or its result found no room (or no segment) in shared memory.

    Instances reach their caller as :class:`ModelError` or :class:`StageError` with this
    as their ``__cause__``; :meth:`Runtime.servable_status` says what happened to each
    worker.
    """


class CallError(MindServeError):
    """A whole call failed. ``servable``, ``version`` and ``method`` say where, once known
    (``None`` for an error raised before the call reached a servable version)."""

    servable: str | None = None
    version: int | None = None
    method: str | None = None


class RuntimeClosedError(CallError, RuntimeError):
    """The runtime has been closed (or was inherited through ``fork()``) and cannot be used."""


class OverloadedError(CallError, RuntimeError):
    """A queue is full (``Batching.max_queue``); the call was not accepted. Retry later."""


class DeadlineExceededError(CallError, TimeoutError):
    """The call's ``timeout`` passed first; its instances still queued never reach the model."""


class InstanceError(MindServeError):
    """One instance of a request failed.

    Attributes name where: ``servable``, ``version``, ``method``, ``index`` (the
    instance's position in the request) and, when known, ``input`` or ``stage``.
    ``detail`` is the message without the location.
    """

    def __init__(
        self,
        detail: str,
        *,
        servable: str | None = None,
        version: int | None = None,
        method: str | None = None,
        index: int | None = None,
    ) -> None:
        self.detail = detail
        self.servable = servable
        self.version = version
        self.method = method
        self.index = index
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.servable is not None:
            version = f" version {self.version}" if self.version is not None else ""
            where.append(f"servable '{self.servable}'{version}")
        if self.method is not None:
            where.append(f"method '{self.method}'")
        if self.index is not None:
            where.append(f"instance {self.index}")
        return f"{', '.join(where)}: {self.detail}" if where else self.detail


class InvalidInputError(InstanceError, ValueError):
    """An instance's input is missing, unknown, or of the wrong type, dtype or shape."""


class StageError(InstanceError, RuntimeError):
    """A Python stage raised, or returned the wrong number of outputs or ``None``."""


class ModelError(InstanceError, RuntimeError):
    """The model failed while running the batch that held this instance."""


class InferenceError(MindServeError):
    """Some instances of a request failed.

    ``results`` holds one entry per instance, in order: the instance's output dict,
    or the :class:`InstanceError` it failed with. ``errors`` maps the index of each
    failed instance to its error.
    """

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.errors: dict[int, InstanceError] = {
            i: r for i, r in enumerate(results) if isinstance(r, InstanceError)
        }
        shown = list(self.errors.values())[:3]
        more = len(self.errors) - len(shown)
        lines = [f"{len(self.errors)} of {len(results)} instances failed:"]
        lines += [f"  {e}" for e in shown]
        if more:
            lines.append(f"  ... and {more} more (see .errors)")
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        # Built again from its results (pickle would pass the message as ``results``).
        return (type(self), (self.results,), self.__dict__)


class MindSporeVersionWarning(UserWarning):
    """The installed MindSpore is outside the range mindserve is tested with."""


class MindServeWarning(UserWarning):
    """A definition or load problem worth fixing (a model exported with a fixed batch size
    of 1 never batches, ...). Issued when the application configured no logging; with
    logging configured, the same message goes to the ``mindserve`` logger only."""


class RuntimeNotClosedWarning(ResourceWarning):
    """A :class:`Runtime` became unreachable without ``close()``; mindserve closed it then.

    Unlike other resource warnings it is shown by default (once per place), since the
    runtime it reports held threads and models until then.
    """

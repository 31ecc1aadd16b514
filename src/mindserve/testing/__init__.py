"""mindserve.testing: test servables fast, without MindSpore, with reproducible batches.

* :func:`replace_models` replaces models of a servable by Python callables or fixed
  outputs, without editing the servable (MindSpore is never imported for them).
* :class:`DeterministicRuntime` is a runtime whose batches hold one call's instances,
  formed by fixed rules, with no timing-based decision and no warm-up.
* :func:`assert_instance_errors` and :func:`raises_instance_errors` check which instances
  of a request failed, and with what.
* The pytest plugin (:mod:`mindserve.testing.pytest_plugin`) gives a ``mindserve_runtime``
  fixture: a :class:`DeterministicRuntime` closed after the test.

``import mindserve`` does not import this module, and this module does not import pytest
(only its plugin does). See docs/testing.md.
"""

from mindserve.testing._asserts import CaughtErrors, assert_instance_errors, raises_instance_errors
from mindserve.testing._doubles import FixedOutput, ServableDouble, replace_models
from mindserve.testing._runtime import DeterministicRuntime

__all__ = [
    "CaughtErrors",
    "DeterministicRuntime",
    "FixedOutput",
    "ServableDouble",
    "assert_instance_errors",
    "raises_instance_errors",
    "replace_models",
]

"""Serve a servable with Ray Serve (the ``mindserve[ray]`` extra).

* :func:`application` turns a servable factory into a Ray Serve application: every replica
  builds the servable, runs it in its own :class:`mindserve.Runtime` and batches the
  requests it receives with mindserve's scheduler.
* :class:`Client` calls it like :meth:`mindserve.Runtime.infer`, with the same results and
  the same errors, across the process boundary.

Importing this module imports Ray (``import mindserve`` does not). See docs/ray.md.
"""

from mindserve.ray._application import application
from mindserve.ray._client import Client
from mindserve.ray._replica import ReplicaStatus

__all__ = ["Client", "ReplicaStatus", "application"]

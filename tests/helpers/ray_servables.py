"""Servable factories for tests/e2e/test_ray.py: Ray Serve replicas import this module
(tests/helpers is on their PYTHONPATH) and call a factory to build their own servable."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np

import mindserve


def mlp(directory: str, hold_directory: str | None = None) -> mindserve.Servable:
    """The exported MLP (input ``x``: 16 float32 values) with four methods:

    * ``predict``: the model's logits;
    * ``gathered``: the same, from a copy of the model that waits for 8 instances to batch;
    * ``checked``: the same after a stage that fails instances whose first value is negative;
    * ``held``: the same, but the first call to reach a replica with an empty
      ``hold_directory`` writes a file there (named after the replica's pid) and never
      returns: a call the test can kill the replica under;
    * ``tokens``: a per-token model of variable length (``x`` of shape (length, 4), a
      Python callable ``2x + 1`` padded to length buckets 4 and 8): each instance gets its
      own length back;
    * ``where``: 1.0 if its per-instance stage ran in a thread running an event loop (the
      replica's own), else 0.0.
    """
    svc = mindserve.Servable("mlp", directory=directory)
    net = svc.model("mlp.mindir")
    # The same file, batching up to 8 instances and waiting up to a minute for them.
    gathering = svc.model(
        "mlp.mindir", name="gathering", batching=mindserve.Batching(max_batch_size=8, max_delay=60)
    )

    per_token = svc.model(
        lambda x: 2 * x + 1,
        name="per_token",
        padding=mindserve.Padding(inputs={0: 0}, outputs={0: 0}, buckets=[4, 8]),
    )

    @svc.stage
    def nonnegative(x):
        if x[0] < 0:
            raise ValueError(f"the first value is negative ({x[0]})")
        return x

    @svc.stage
    def on_loop(x):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return np.float32(0.0)
        return np.float32(1.0)

    @svc.stage(batch_size=0)  # batched stages run on mindserve's threads, not the replica's loop
    def hold(ys):
        if hold_directory is not None and not os.listdir(hold_directory):
            with open(os.path.join(hold_directory, str(os.getpid())), "w"):
                pass
            threading.Event().wait(120)  # until the test kills this replica
        return ys

    @svc.method(outputs=["y"])
    def predict(x):
        return net(x)

    @svc.method(outputs=["y"])
    def gathered(x):
        return gathering(x)

    @svc.method(outputs=["y"])
    def checked(x):
        return net(nonnegative(x))

    @svc.method(outputs=["y"])
    def held(x):
        return hold(net(x))

    @svc.method(outputs=["y"])
    def tokens(x):
        return per_token(x)

    @svc.method(outputs=["on_loop"])
    def where(x):
        return on_loop(x)

    return svc


def not_a_servable() -> str:
    return "not a servable"


def instances(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=16).astype(np.float32)} for _ in range(count)]

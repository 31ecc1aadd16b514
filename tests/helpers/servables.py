"""Servables shared by several test files: Python callables that fail on purpose, the ``calc``
pipeline, variable-length text, and the exported MLP."""

import numpy as np

import mindserve


def rejecting_negatives(batch_size):
    """A servable whose batched stage 'check' raises for any batch holding a negative."""
    svc = mindserve.Servable("s")

    @svc.stage(batch_size=batch_size)
    def check(xs):
        if any(x < 0 for x in xs):
            raise ValueError("negative")
        return xs

    svc.add_method(lambda x: check(x), name="m")
    return svc


def faulty_servable():
    """x == 1 fails its stage, x == 2 fails in the model, a missing x is invalid input."""
    svc = mindserve.Servable("faulty")

    def double(x):
        if (x == 2).any():
            raise ValueError("two")
        return x * 2

    model = svc.model(double, name="double", batching=mindserve.Batching(max_batch_size=8))

    @svc.stage(name="check")
    def check(x):
        if x == 1:
            raise ValueError("one")
        return np.array([x], np.float32)

    @svc.method(outputs="y")
    def run(x):
        return model(check(x))

    return svc


def calc_servable(calls=None):
    """pre (per instance) -> model (batched callable) -> post (batched stage)."""
    svc = mindserve.Servable("calc")

    def times_ten(x):
        if calls is not None:
            calls.append(x.shape)
        if (x < 0).any():
            raise ValueError("negative values are not allowed")
        return x * 10

    model = svc.model(times_ten)

    @svc.stage
    def pre(x):
        if isinstance(x, str):
            raise TypeError(f"cannot use text {x!r}")
        return np.asarray(x, np.float32) + 1

    @svc.stage(batch_size=3)
    def post(ys):
        return [float(y.sum()) for y in ys]

    @svc.method(outputs=["total"])
    def compute(x):
        return post(model(pre(x)))

    @svc.method(outputs=["y"])
    def raw(x):
        return model(x)

    return svc


def per_token_and_pooled(seen):
    """(B, L, 4) tokens and a (B, L) mask -> per-token (B, L, 4) and masked mean (B, 4)."""

    def model(x, mask):
        seen.append((x.shape, mask.copy()))
        weights = mask[..., None]
        return x * 2, (x * weights).sum(axis=1) / weights.sum(axis=1)

    return model


def text_servable(seen, **padding):
    svc = mindserve.Servable("text")
    padding.setdefault("inputs", {0: 0})
    padding.setdefault("mask", {1: 0})
    padding.setdefault("outputs", {0: 0})
    model = svc.model(per_token_and_pooled(seen), outputs=2, padding=mindserve.Padding(**padding))
    svc.add_method(lambda x: model(x), name="encode", outputs=["tokens", "pooled"])
    return svc


def tokens(length, seed=0):
    return np.random.default_rng(seed).normal(size=(length, 4)).astype(np.float32)


def mlp_servable(directory, name="mlp", **model_options):
    """The exported MLP (``exported`` in tests/conftest.py) behind method ``predict``: input
    ``x`` (16 float32 values), output ``logits``; ``model_options`` go to ``Servable.model``."""
    svc = mindserve.Servable(name, directory=directory)
    mlp = svc.model("mlp.mindir", **model_options)
    svc.add_method(lambda x: mlp(x), name="predict", outputs="logits")
    return svc

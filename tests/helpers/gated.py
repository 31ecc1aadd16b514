"""A model that holds its batch until a test lets it go: for tests of queues and waiting."""

import threading

import mindserve


class Gate:
    """A callable model that says when a batch entered it and waits until ``open()``."""

    def __init__(self):
        self.opened = threading.Event()
        self.entered = threading.Event()

    def __call__(self, x):
        self.entered.set()
        self.opened.wait(30)
        return x

    def open(self):
        self.opened.set()


def gated_servable(gate, name="s", **batching):
    """A servable whose method ``m`` runs the gated model (named ``model``)."""
    svc = mindserve.Servable(name)
    m = svc.model(gate, name="model", batching=mindserve.Batching(**batching) if batching else None)
    svc.add_method(lambda x: m(x), name="m")
    return svc


def queued(rt, name="s", model="model"):
    """How many instances wait in the queue of ``model`` of servable ``name`` (default version)."""
    return rt._hosted[name].default().models[model].scheduler.queued


def one_then_three_then_one(rt):
    """On a gated model: a batch of 1 holds it while 3 calls queue; they run as one batch of
    3 once it opens; then a lone call runs inline (the model idle). Batches: 1, 3, 1."""
    import numpy as np

    from waiting import wait_until

    gate = Gate()
    rt.start(gated_servable(gate, refill_wait=0))
    first = rt.infer_async("s", "m", [{"x": np.array([0.0])}])
    assert gate.entered.wait(10)
    rest = [rt.infer_async("s", "m", [{"x": np.array([float(k)])}]) for k in range(1, 4)]
    wait_until(lambda: queued(rt) == 3)
    gate.open()
    for future in [first, *rest]:
        future.result(10)
    rt.infer("s", "m", [{"x": np.array([9.0])}])

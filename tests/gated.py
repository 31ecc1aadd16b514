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

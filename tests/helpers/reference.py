"""What the tests compare with: a MindSpore network called directly, and the key of encrypted models.

MindSpore is imported only when ``run_net`` runs, so importing this module stays light."""

import mindserve

ENC_KEY = b"0123456789ABCDEF"


def run_net(net, *arrays):
    """Call a MindSpore network directly, the reference the tests compare with."""
    import mindspore as ms

    with mindserve.mindspore_lock():
        out = net(*(ms.Tensor(a) for a in arrays))
        if isinstance(out, (tuple, list)):
            return tuple(o.asnumpy() for o in out)
        return out.asnumpy()

"""Small MindSpore networks the tests export themselves (no downloaded weights)."""

from __future__ import annotations

import os

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops


class MLP(nn.Cell):
    """A small dense network: 16 -> 32 -> 10, with fixed, seeded weights."""

    def __init__(self, seed: int = 0, n_in: int = 16) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w1 = ms.Parameter(Tensor(rng.normal(0, 0.5, (n_in, 32)).astype(np.float32)), name="w1")
        self.w2 = ms.Parameter(Tensor(rng.normal(0, 0.5, (32, 10)).astype(np.float32)), name="w2")
        self.relu = nn.ReLU()

    def construct(self, x):
        return ops.matmul(self.relu(ops.matmul(x, self.w1)), self.w2)


class AddMul(nn.Cell):
    """Two inputs, two outputs: (x + y, x * y)."""

    def construct(self, x, y):
        return x + y, x * y


class Add(nn.Cell):
    """x + y (MindSpore Serving's tensor_add example)."""

    def construct(self, x, y):
        return x + y


class ScaleBy(nn.Cell):
    """x * scale, where ``scale`` has no batch dimension."""

    def construct(self, x, scale):
        return x * scale


class LeNet(nn.Cell):
    """A LeNet-sized CNN on 1x32x32 images (for correctness, not speed)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, pad_mode="valid")
        self.conv2 = nn.Conv2d(6, 16, 5, pad_mode="valid")
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Dense(16 * 5 * 5, 120)
        self.fc2 = nn.Dense(120, 84)
        self.fc3 = nn.Dense(84, 10)

    def construct(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.flatten(x)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def export(net: nn.Cell, path: str, *inputs: Tensor, **kwargs) -> str:
    """Export ``net`` to ``path`` (ending in .mindir) and return the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ms.export(net, *inputs, file_name=path[: -len(".mindir")], file_format="MINDIR", **kwargs)
    return path


def dynamic(shape_tail: tuple, dtype=ms.float32) -> Tensor:
    """An export placeholder taking any batch size."""
    return Tensor(shape=[None, *shape_tail], dtype=dtype)


def zeros(*shape: int) -> Tensor:
    return Tensor(np.zeros(shape, np.float32))


def _weights(rng, *shape, scale=0.3):
    return ms.Parameter(Tensor(rng.normal(0, scale, shape).astype(np.float32)))


class EncoderLayer(nn.Cell):
    """Single-head self-attention with an attention mask, then a feed-forward block."""

    def __init__(self, rng, dim: int) -> None:
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (_weights(rng, dim, dim) for _ in range(4))
        self.w1, self.w2 = _weights(rng, dim, 2 * dim), _weights(rng, 2 * dim, dim)
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.mix = ops.BatchMatMul()
        self.softmax = nn.Softmax(axis=-1)
        self.relu = nn.ReLU()
        self.scale = Tensor(np.float32(dim**-0.5))

    def construct(self, x, bias):
        q, k, v = ops.matmul(x, self.wq), ops.matmul(x, self.wk), ops.matmul(x, self.wv)
        attention = self.softmax(self.scores(q, k) * self.scale + bias)
        x = x + ops.matmul(self.mix(attention, v), self.wo)
        return x + ops.matmul(self.relu(ops.matmul(x, self.w1)), self.w2)


#: The vocabulary of TinyEncoder's token ids.
VOCAB = 50


class TinyEncoder(nn.Cell):
    """A small transformer encoder: token ids (batch, length) and an attention mask (batch,
    length; 1 on tokens, 0 on padding) -> per-token states (batch, length, dim) and their
    masked mean (batch, dim). Random, seeded weights."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, layers: int = 2, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embedding = _weights(rng, vocab, dim, scale=1.0)
        self.layers = nn.CellList([EncoderLayer(rng, dim) for _ in range(layers)])
        self.gather = ops.Gather()
        self.expand = ops.ExpandDims()
        self.big = Tensor(np.float32(1e9))

    def construct(self, ids, mask):
        x = self.gather(self.embedding, ids, 0)
        # 0 on tokens, -1e9 on padding: no attention to padding
        bias = self.expand((mask - ops.ones_like(mask)) * self.big, 1)
        for layer in self.layers:
            x = layer(x, bias)
        weights = self.expand(mask, 2)
        pooled = (x * weights).sum(axis=1) / weights.sum(axis=1)
        return x, pooled


class PerToken(nn.Cell):
    """(batch, length, 8) -> (batch, length, 4), each token on its own (needs no mask)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.w = _weights(np.random.default_rng(seed), 8, 4)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(ops.matmul(x, self.w))


class MeanPool(nn.Cell):
    """(batch, length, 8) -> (batch, 4): a mean over every position, padding included."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.w = _weights(np.random.default_rng(seed), 8, 4)

    def construct(self, x):
        return ops.matmul(x, self.w).mean(axis=1)

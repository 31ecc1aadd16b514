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

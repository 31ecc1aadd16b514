# What a Python stage receives and may return, as in MindSpore Serving: every value is a
# tensor on its way (bytes arrive as uint8 arrays, Python numbers as numpy arrays).
import io

import numpy as np
from mindspore_serving.server import register

model = register.declare_model(model_file="tensor_add.mindir", model_format="MindIR")


def inspect_values(raw, count, ratio, flag, text):
    return raw.tobytes(), count.astype(np.float32) * 2, ratio * 2, ~flag, text + "!", np.argmax(count)


@register.register_method(output_names=["raw", "doubled", "ratio2", "negated", "text", "rank"])
def values(raw, count, ratio, flag, text):
    return register.add_stage(inspect_values, raw, count, ratio, flag, text, outputs_count=6)


def illegal_result(x):
    return [None, ["a", "b"], {"k": 1}, 7][int(x[0])]


@register.register_method(output_names=["y"])
def illegal(x):
    return register.add_stage(illegal_result, x, outputs_count=1)


def one_too_many(instances):
    return [x * 2 for (x,) in instances] + [np.zeros(1)]


def one_too_few(instances):
    return [x * 2 for (x,) in instances][:-1]


@register.register_method(output_names=["y"])
def extra(x):
    return register.add_stage(one_too_many, x, outputs_count=1, batch_size=4)


@register.register_method(output_names=["y"])
def missing(x):
    return register.add_stage(one_too_few, x, outputs_count=1, batch_size=4)


def decode(png):
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png.tobytes())).convert("RGB"), np.float32)
    return pixels.reshape(-1, 3).mean(axis=0) / 255.0


def ones(x):
    return np.ones(3, np.float32)


@register.register_method(output_names=["y"])
def image(png):
    mean = register.add_stage(decode, png, outputs_count=1)
    bias = register.add_stage(ones, mean, outputs_count=1)
    return register.add_stage(model, mean, bias, outputs_count=1)


def fails(x):
    if x[0] > 0:
        raise ValueError("bad value")
    return x


@register.register_method(output_names=["y"])
def failing(x):
    return register.add_stage(fails, x, outputs_count=1)


@register.register_method(output_names=["y"])
def failing_tagged(x):
    y = register.add_stage(model, x, x, outputs_count=1)
    return register.add_stage(fails, y, outputs_count=1, tag="Check")

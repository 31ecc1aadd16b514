# One model of two files (subgraph 0: add, subgraph 1: mul), called from Python stages.
from mindspore_serving.server import register

model = register.declare_model(model_file=["tensor_add.mindir", "tensor_mul.mindir"], model_format="MindIR")


def add_then_mul(x1, x2):
    total = model.call(x1, x2)
    return model.call(total, x2, subgraph=1)


def add_batch(instances):
    outputs = model.call([[x1, x2] for x1, x2 in instances])
    for (total,) in outputs:
        yield total


@register.register_method(output_names=["y"])
def compute(x1, x2):
    y = register.add_stage(add_then_mul, x1, x2, outputs_count=1)
    return y


@register.register_method(output_names=["y"])
def add_many(x1, x2):
    y = register.add_stage(add_batch, x1, x2, outputs_count=1, batch_size=8)
    return y

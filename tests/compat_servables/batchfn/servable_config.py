# Batch functions: a list of instances in, one result per instance out (yielded or returned).
from mindspore_serving.server.register import add_stage, declare_model, register_method

model = declare_model(model_file="tensor_add.mindir", model_format="MindIR")


def double_batch(instances):
    for x1, x2 in instances:
        yield x1 * 2, x2 * 2


def total_batch(instances):
    return [float(instance[0].sum()) for instance in instances]


@register_method(output_names=["y", "total"])
def run(x1, x2):
    a, b = add_stage(double_batch, x1, x2, outputs_count=2, batch_size=4)
    y = add_stage(model, a, b, outputs_count=1)
    total = add_stage(total_batch, y, outputs_count=1, batch_size=0)
    return y, total

# The deprecated 1.x interfaces: declare_servable, call_preprocess, call_servable, call_postprocess.
import numpy as np
from mindspore_serving.server import register


def add_trans_datatype(x1, x2):
    return x1.astype(np.float32), x2.astype(np.float32)


def sum_up(y):
    return float(y.sum())


register.declare_servable(servable_file="tensor_add.mindir", model_format="MindIR", with_batch_dim=True)


@register.register_method(output_names=["y", "total"])
def add_cast(x1, x2):
    x1, x2 = register.call_preprocess(add_trans_datatype, x1, x2)
    y = register.call_servable(x1, x2)
    total = register.call_postprocess(sum_up, y)
    return y, total


def cast_pipeline(instances):
    for x1, x2 in instances:
        yield x1.astype(np.float32), x2.astype(np.float32)


def sum_pipeline(instances):
    return [float(instance[0].sum()) for instance in instances]


@register.register_method(output_names=["y", "total"])
def add_pipeline(x1, x2):
    x1, x2 = register.call_preprocess_pipeline(cast_pipeline, x1, x2)
    y = register.call_servable(x1, x2)
    total = register.call_postprocess_pipeline(sum_pipeline, y)
    return y, total

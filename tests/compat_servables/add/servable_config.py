# A MindSpore Serving 2.0 servable, unchanged: a tensor-add model with a batch dimension.
import numpy as np
from mindspore_serving.server import register


def add_trans_datatype(x1, x2):
    return x1.astype(np.float32), x2.astype(np.float32)


model = register.declare_model(model_file="tensor_add.mindir", model_format="MindIR", with_batch_dim=True)


@register.register_method(output_names=["y"])
def add_common(x1, x2):
    y = register.add_stage(model, x1, x2, outputs_count=1)
    return y


@register.register_method(output_names=["y"])
def add_cast(x1, x2):
    x1, x2 = register.add_stage(add_trans_datatype, x1, x2, outputs_count=2)
    y = register.add_stage(model, x1, x2, outputs_count=1)
    return y

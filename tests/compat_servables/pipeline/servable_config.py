# Preprocess, two models, postprocess. The preprocess returns a (4, 4) array for a model
# input of shape (16,): MindSpore Serving accepts it (same dtype and byte size).
import mindspore_serving.server.register as register
import numpy as np

mlp = register.declare_model(model_file="mlp.mindir", model_format="MindIR")
shift = register.declare_model(model_file="add10.mindir", model_format="MindIR")


def preprocess(image):
    return (image.astype(np.float32) / 255.0).reshape(4, 4)


def postprocess(logits, shifted):
    return int(np.argmax(logits)), float(shifted.sum())


@register.register_method(output_names=["label", "total"])
def classify(image, bias):
    x = register.add_stage(preprocess, image, outputs_count=1)
    logits = register.add_stage(mlp, x, outputs_count=1)
    shifted = register.add_stage(shift, logits, bias, outputs_count=1)
    label, total = register.add_stage(postprocess, logits, shifted, outputs_count=2)
    return label, total

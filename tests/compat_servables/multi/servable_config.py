# A model with two outputs, used only through Model.call: its output count comes from the file.
from mindspore_serving.server import register

model = register.declare_model(model_file="addmul.mindir", model_format="MindIR")
assert isinstance(model, register.model.Model)


def both(x, y):
    total, product = model.call(x, y)
    return total, product


def several(x, y):
    return [a + b for a, b in model.call([(x, y), (y, x)])]


def nothing(x):
    return model.call([])


@register.register_method(output_names=["sum", "product"])
def run(x, y):
    return register.add_stage(both, x, y, outputs_count=2)


@register.register_method(output_names=["first", "second"])
def batch(x, y):
    return register.add_stage(several, x, y, outputs_count=2)


@register.register_method(output_names=["y"])
def empty(x):
    return register.add_stage(nothing, x, outputs_count=1)


def too_few(x):
    return model.call(x)


@register.register_method(output_names=["y"])
def short(x):
    return register.add_stage(too_few, x, outputs_count=1)


def past_the_end(x, y):
    return model.call(x, y, subgraph=1)


@register.register_method(output_names=["y"])
def beyond(x, y):
    return register.add_stage(past_the_end, x, y, outputs_count=1)


def too_short(x, y):
    return model.call(x[:2], y)[0]


@register.register_method(output_names=["y"])
def wrong_size(x, y):
    return register.add_stage(too_short, x, y, outputs_count=1)

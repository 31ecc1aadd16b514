"""Defining servables: decorators, tracing, and misuse rejected at decoration time."""

import numpy as np
import pytest

import mindserve
from mindserve import DefinitionError


def double(x):
    return x * 2


@pytest.fixture
def svc():
    return mindserve.Servable("demo")


def test_decorators_with_and_without_parentheses(svc):
    """stage and method work bare and with options; the method is traced into steps."""

    @svc.stage
    def pre(x):
        return x + 1

    @svc.stage(batch_size=4, outputs=2)
    def split(xs):
        return [(x, -x) for x in xs]

    model = svc.model(double)

    @svc.method(outputs=["a", "b"])
    def run(x):
        return split(model(pre(x)))

    @svc.method
    def plain(x):
        return pre(x)

    method = svc.methods["run"]
    assert method.inputs == ("x",)
    assert method.outputs == ("a", "b")
    assert [step.callee for step in method.steps] == [pre, model, split]
    assert svc.methods["plain"].outputs == ("output",)
    assert isinstance(pre, mindserve.Stage) and pre.batch_size is None
    assert split.batch_size == 4 and split.outputs == 2


def test_plain_forms_match_the_decorators(svc):
    """add_stage and add_method are the plain forms of the decorators."""
    stage = svc.add_stage(lambda x: x, name="identity")
    method = svc.add_method(lambda x: stage(x), name="echo", outputs="y")
    assert svc.stages["identity"] is stage
    assert method.outputs == ("y",)


def test_stage_called_outside_a_method_just_runs(svc):
    """A stage stays an ordinary function: real values in, real values out."""

    @svc.stage
    def normalize(x):
        """Scale to [0, 1]."""
        return x / 255.0

    @svc.stage(batch_size=2)
    def top1(rows):
        return [int(r.argmax()) for r in rows]

    assert normalize(np.array([255.0]))[0] == 1.0
    assert normalize.__doc__ == "Scale to [0, 1]."
    assert normalize.__name__ == "normalize"
    assert top1([np.array([0, 3, 1]), np.array([5, 0, 0])]) == [1, 0]


def test_dict_return_names_the_outputs(svc):
    """A method may return a dict of output name to value."""
    stage = svc.add_stage(lambda x: (x, x), name="pair", outputs=2)

    @svc.method
    def named(x):
        a, b = stage(x)
        return {"first": a, "second": b}

    assert svc.methods["named"].outputs == ("first", "second")


def test_default_output_names_for_tuples(svc):
    """Without outputs=, a tuple return is named output_0, output_1, ..."""
    stage = svc.add_stage(lambda x: (x, x), name="pair", outputs=2)
    svc.add_method(lambda x: stage(x), name="m")
    assert svc.methods["m"].outputs == ("output_0", "output_1")


@pytest.mark.parametrize(
    "function, match",
    [
        (lambda *xs: xs[0], r"takes \*xs"),
        (lambda **kw: kw, r"takes \*\*kw"),
        (lambda x=1: x, "default value"),
    ],
)
def test_method_signature_misuse(svc, function, match):
    """*args, **kwargs and default values are rejected with a clear message."""
    with pytest.raises(DefinitionError, match=match):
        svc.add_method(function, name="bad")


def test_literal_passed_to_a_stage(svc):
    """A literal where a placeholder is expected fails at decoration time."""

    @svc.stage
    def scale(x, factor):
        return x * factor

    with pytest.raises(DefinitionError, match=r"passes the literal 3 as argument 1 of stage 'scale'"):

        @svc.method
        def bad(x):
            return scale(x, 3)


def test_literal_passed_to_a_model(svc):
    model = svc.model(double)
    with pytest.raises(DefinitionError, match="literal 'x' as argument 0 of model 'double'"):
        svc.add_method(lambda x: model("x"), name="bad")


def test_return_count_differs_from_outputs(svc):
    stage = svc.add_stage(lambda x: x, name="f")
    with pytest.raises(DefinitionError, match=r"returns 1 value but declares 2 outputs \['a', 'b'\]"):
        svc.add_method(lambda x: stage(x), name="m", outputs=["a", "b"])


def test_returning_a_literal(svc):
    with pytest.raises(DefinitionError, match="returns the literal 42 for output 'y'"):
        svc.add_method(lambda x: 42, name="m", outputs="y")


def test_stage_called_with_wrong_number_of_arguments(svc):
    @svc.stage
    def add(x, y):
        return x + y

    with pytest.raises(DefinitionError, match=r"stage 'add\(x, y\)' cannot be called with 1 positional"):
        svc.add_method(lambda x: add(x), name="m")
    with pytest.raises(DefinitionError, match="cannot be called with 3 positional"):
        svc.add_method(lambda x: add(x, x, x), name="m2")


def test_stage_keyword_arguments_bind_by_name(svc):
    """Keyword arguments bind to the stage's parameters at trace time."""

    @svc.stage
    def sub(a, b):
        return a - b

    svc.add_method(lambda x, y: sub(b=x, a=y), name="m")
    (step,) = svc.methods["m"].steps
    assert step.args == (1, 0)


def test_duplicate_method_name(svc):
    stage = svc.add_stage(lambda x: x, name="f")
    svc.add_method(lambda x: stage(x), name="m")
    with pytest.raises(DefinitionError, match="already has a method named 'm'"):
        svc.add_method(lambda x: stage(x), name="m")


def test_duplicate_model_and_stage_names(svc):
    svc.model(double)
    with pytest.raises(DefinitionError, match=r"already has a model named 'double'\. Hint: pass name="):
        svc.model(double)
    svc.model(double, name="double2")
    svc.add_stage(double)
    with pytest.raises(DefinitionError, match="already has a stage named 'double'"):
        svc.add_stage(double)


@pytest.mark.parametrize(
    "body, match",
    [
        (lambda x: x + 1, "adds to input 'x'"),
        (lambda x: 2 * x, "multiplies input 'x'"),
        (lambda x: x if x else None, "uses in a condition input 'x'"),
        (lambda x: x.shape, "reads attribute 'shape' of input 'x'"),
        (lambda x: x[0], "indexes input 'x'"),
    ],
)
def test_placeholder_misuse_says_why(svc, body, match):
    """Arithmetic, conditions and attributes on traced values are rejected with a hint."""
    with pytest.raises(DefinitionError, match=match):
        svc.add_method(body, name="m")


def test_unpacking_a_single_output(svc):
    stage = svc.add_stage(lambda x: (x, x), name="pair")

    def body(x):
        a, _b = stage(x)
        return a

    with pytest.raises(DefinitionError, match=r"unpacks output 0 of stage 'pair'.*outputs=N"):
        svc.add_method(body, name="m")


def test_model_of_another_servable(svc):
    other = mindserve.Servable("other")
    model = other.model(double)
    with pytest.raises(DefinitionError, match="calls model 'double' of servable 'other'"):
        svc.add_method(lambda x: model(x), name="m")


def test_model_called_with_different_input_counts(svc):
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="one")
    with pytest.raises(DefinitionError, match="calls model 'double' with 2 inputs; it was called with 1"):
        svc.add_method(lambda x, y: model(x, y), name="two")


def test_placeholder_of_another_method(svc):
    stage = svc.add_stage(lambda x: x, name="f")
    leaked = []
    svc.add_method(lambda x: leaked.append(x) or stage(x), name="m1")
    with pytest.raises(DefinitionError, match="of another method"):
        svc.add_method(lambda y: stage(leaked[0]), name="m2")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": -1}, "batch_size must be None"),
        ({"batch_size": 1.5}, "batch_size must be None"),
        ({"outputs": 0}, "outputs must be an int >= 1"),
    ],
)
def test_bad_stage_options(svc, kwargs, match):
    with pytest.raises(DefinitionError, match=match):
        svc.add_stage(double, **kwargs)


@pytest.mark.parametrize(
    "source, kwargs, match",
    [
        (42, {}, "a model must be a MindIR path, a mindspore.nn.Cell or a Python callable"),
        ("model.onnx", {}, "ending in '.mindir'"),
        ("m.mindir", {"dec_key": b"short"}, "dec_key must be bytes of length 16, 24 or 32; got 5 bytes"),
        ("m.mindir", {"dec_mode": "ROT13"}, "dec_mode must be one of"),
        (double, {"dec_key": b"0" * 16}, "dec_key only applies to MindIR files"),
        (double, {"with_batch_dim": False, "without_batch_dim_inputs": [0]}, "only applies when"),
        (double, {"without_batch_dim_inputs": [-1]}, "input indices"),
        (double, {"outputs": 0}, "outputs must be an int >= 1"),
    ],
)
def test_bad_model_declarations(svc, source, kwargs, match):
    with pytest.raises(DefinitionError, match=match):
        svc.model(source, **kwargs)


def test_bad_servable_names():
    with pytest.raises(DefinitionError, match="non-empty str"):
        mindserve.Servable("")
    with pytest.raises(DefinitionError, match="without '/'"):
        mindserve.Servable("a/b")


def test_model_names_default_from_the_source(svc):
    assert svc.model("dir/resnet50.mindir").name == "resnet50"
    assert svc.model(lambda x: x).name == "model"
    assert svc.model(double).name == "double"


def test_tuple_return_annotation_declares_the_outputs(svc):
    """A stage annotated to return a fixed-length tuple has that many outputs."""

    @svc.stage
    def stats(x) -> tuple[float, float]:
        return float(x.mean()), float(x.std())

    @svc.stage(batch_size=4)
    def pairs(xs) -> list[tuple[int, int]]:
        return [(x, -x) for x in xs]

    @svc.stage
    def anything(x) -> tuple[float, ...]:
        return (x,)

    assert (stats.outputs, pairs.outputs, anything.outputs) == (2, 2, 1)

    @svc.method(outputs=["mean", "std"])
    def describe(x):
        mean, std = stats(x)
        return mean, std

    assert svc.methods["describe"].outputs == ("mean", "std")


@pytest.mark.parametrize(
    "outputs, match",
    [([], "must be a non-empty list of output names"), (["a", "a"], r"names an output twice: \['a', 'a'\]")],
)
def test_bad_output_names(svc, outputs, match):
    stage = svc.add_stage(lambda x: x, name="f")
    with pytest.raises(DefinitionError, match=match):
        svc.add_method(lambda x: stage(x), name="m", outputs=outputs)


def test_dict_return_must_match_declared_outputs(svc):
    stage = svc.add_stage(lambda x: x, name="f")
    with pytest.raises(DefinitionError, match=r"returns outputs \['y'\] but declares outputs=\['z'\]"):
        svc.add_method(lambda x: {"y": stage(x)}, name="m", outputs=["z"])


def test_keyword_only_stage_arguments_are_refused(svc):
    @svc.stage
    def scale(x, *, factor=2):
        return x * factor

    with pytest.raises(DefinitionError, match=r"receives keyword-only arguments \['factor'\]"):
        svc.add_method(lambda x: scale(x, factor=x), name="m")


@pytest.mark.parametrize("name", ["..", ".", "a\\b"])
def test_servable_names_that_are_paths_are_refused(name):
    with pytest.raises(mindserve.DefinitionError, match="servable name"):
        mindserve.Servable(name)


def test_a_relative_model_path_cannot_leave_the_version_directory():
    svc = mindserve.Servable("s")
    with pytest.raises(mindserve.DefinitionError, match="must stay inside the version directory"):
        svc.model("../../elsewhere/x.mindir")
    assert svc.model("/abs/x.mindir").source == "/abs/x.mindir"  # explicit absolute paths stay allowed
    assert svc.model("sub/../y.mindir").name == "y"


def test_async_def_stages_and_models_are_refused_when_defined():
    svc = mindserve.Servable("async")

    async def fetch(x):
        return x

    with pytest.raises(DefinitionError, match=r"stage 'fetch' is an async def function"):
        svc.stage(fetch)
    with pytest.raises(DefinitionError, match=r"stage 'fetch' is an async def function"):
        svc.stage(batch_size=4)(fetch)
    with pytest.raises(DefinitionError, match=r"model 'fetch' is an async def function"):
        svc.model(fetch)


def test_a_callable_object_with_an_async_call_is_refused_as_a_model():
    class Fetcher:
        async def __call__(self, x):
            return x

    with pytest.raises(DefinitionError, match="async def"):
        mindserve.Servable("async").model(Fetcher(), name="fetcher")


def test_servable_model_takes_every_option_of_model_with_its_type():
    """Servable.model declares its options once, as ModelOptions: an option added to Model
    must be added there too (mypy checks the types Servable.model passes on)."""
    import inspect
    import typing

    from mindserve._define.model import ModelOptions

    hints = typing.get_type_hints(mindserve.Model.__init__)
    keyword_only = {
        name: hints[name]
        for name, parameter in inspect.signature(mindserve.Model.__init__).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert typing.get_type_hints(ModelOptions) == keyword_only
    model = svc_model_with_every_option()
    assert (model.name, model.with_batch_dim, model.outputs, model.dec_mode) == ("m", True, 2, "AES-CBC")


def svc_model_with_every_option():
    return mindserve.Servable("options").model(
        "m.mindir",
        name="m",
        with_batch_dim=True,
        without_batch_dim_inputs=[1],
        outputs=2,
        dec_key=b"0" * 16,
        dec_mode="AES-CBC",
        batching=mindserve.Batching(max_batch_size=4),
        sha256="a" * 64,
        padding=None,
    )


def test_a_misspelled_model_option_is_refused_as_python_refuses_it(svc):
    with pytest.raises(TypeError, match=r"^Servable\.model\(\) got an unexpected keyword argument 'nmae'$"):
        svc.model(double, nmae="x")
    assert svc.models == {}

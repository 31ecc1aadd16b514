"""A model's plan (pure: checks, batching, warm-up sizes) and the source strategy per model kind."""

import os

import numpy as np
import pytest

from mindserve import Batching, DefinitionError, LoadError
from mindserve._define.model import Model
from mindserve._execution.executor import run_batch, warm_up
from mindserve._execution.local import CallableExecutor
from mindserve._execution.plan import DEFAULT_MAX_BATCH_SIZE, ModelPlan, WarmUp, default_batching
from mindserve._execution.sources import (
    CallableSource,
    CellSource,
    EncryptedMindirFile,
    MindirFile,
    source_of,
)
from mindserve._values import TensorSpec

WHERE = "servable 's' version 1"
KEY = b"0123456789abcdef"


def double(x):
    return x * 2


def specs(*shapes, dtype="float32"):
    return tuple(TensorSpec(shape, np.dtype(dtype)) for shape in shapes)


class Doubling:
    """An executor with known input specs that doubles its input (and counts its runs)."""

    capacity = 1
    inline = True
    reads_only = False

    def __init__(self, input_specs, fail=False):
        self.input_specs = input_specs
        self.fail = fail
        self.runs = []

    def run(self, arrays, requests=()):
        self.runs.append(arrays[0].shape[0])
        if self.fail:
            raise ValueError("no")
        return (arrays[0] * 2,)

    def warm_up(self, plan):
        return warm_up(plan, self)

    def close(self):
        pass


# -- the plan -------------------------------------------------------------------------


def test_a_dynamic_mindspore_model_batches_up_to_64_padded_to_powers_of_two():
    plan = ModelPlan.of(Model("s", "m.mindir"), specs((None, 3)), WHERE)
    assert plan.batching.max_batch_size == DEFAULT_MAX_BATCH_SIZE == 64
    assert plan.batching.buckets == (1, 2, 4, 8, 16, 32, 64)
    assert plan.instance_specs == specs((3,))
    assert (plan.n_inputs, plan.fixed_batch_size, plan.warmed_up) == (1, None, ())
    assert default_batching() == plan.batching


def test_a_callable_model_is_not_padded_and_counts_its_inputs_from_the_methods():
    model = Model("s", double)
    model.inputs = 2
    plan = ModelPlan.of(model, None, WHERE)
    assert (plan.batching.max_batch_size, plan.batching.buckets) == (64, None)
    assert (plan.n_inputs, plan.instance_specs) == (2, None)


def test_a_fixed_batch_size_is_the_only_bucket_and_other_options_are_refused():
    plan = ModelPlan.of(Model("s", "m.mindir"), specs((4, 3)), WHERE)
    assert (plan.fixed_batch_size, plan.batching.max_batch_size, plan.batching.buckets) == (4, 4, (4,))
    with pytest.raises(
        LoadError, match=r"^servable 's' version 1: model 'm' was exported with batch size 4, so"
    ):
        ModelPlan.of(Model("s", "m.mindir", batching=Batching(max_batch_size=8)), specs((4, 3)), WHERE)


def test_without_a_batch_dimension_each_instance_runs_alone():
    plan = ModelPlan.of(Model("s", "m.mindir", with_batch_dim=False), specs((3,)), WHERE)
    assert (plan.batching.max_batch_size, plan.batching.buckets, plan.instance_specs) == (
        1,
        None,
        specs((3,)),
    )


def test_inputs_without_a_batch_dimension_keep_their_shape():
    plan = ModelPlan.of(Model("s", "m.mindir", without_batch_dim_inputs=[1]), specs((None, 3), (5,)), WHERE)
    assert plan.instance_specs == specs((3,), (5,)) and plan.unbatched == {1}


@pytest.mark.parametrize(
    ("options", "shapes", "inputs", "message"),
    [
        ({}, [(None, 3), (None, 2), (None,)], 2, "model 'm' takes 3 inputs, but a method calls it with 2"),
        (
            {"without_batch_dim_inputs": [3]},
            [(None, 3)],
            None,
            "model 'm' has 1 inputs; without_batch_dim_inputs names [3]",
        ),
        ({}, [()], None, "model 'm' has a scalar input, which has no batch dimension"),
        (
            {"batching": Batching(max_batch_size=16, buckets=None)},
            [(None,)],
            None,
            None,
        ),
    ],
)
def test_load_time_checks(options, shapes, inputs, message):
    model = Model("s", "m.mindir", **options)
    model.inputs = inputs
    if message is None:
        assert ModelPlan.of(model, specs(*shapes), WHERE).batching.buckets == (1, 2, 4, 8, 16)
        return
    with pytest.raises(LoadError) as caught:
        ModelPlan.of(model, specs(*shapes), WHERE)
    assert str(caught.value).startswith(f"{WHERE}: {message}")


def test_compat_models_say_a_count_in_mindspore_servings_words():
    model = Model("s", "m.mindir", name="net#1")
    model.inputs, model.reshape_inputs = 1, True
    with pytest.raises(LoadError, match=r"^The inputs count 1 in register_method not equal to the count 2 "):
        ModelPlan.of(model, specs((None,), (None,)), WHERE)


# -- warm-up and batches ----------------------------------------------------------------


def test_warm_up_compiles_every_bucket_once_and_the_plan_keeps_them():
    executor = Doubling(specs((None, 3)))
    plan = ModelPlan.of(
        Model("s", "m.mindir", batching=Batching(max_batch_size=4)), executor.input_specs, WHERE
    )
    result = executor.warm_up(plan)
    assert [size for size, _ in result.compiled] == executor.runs == [1, 2, 4]
    warmed = plan.warmed(result)
    assert warmed.warmed_up == (1, 2, 4) and warmed.batching.buckets == (1, 2, 4)


def test_warm_up_off_in_batching_runs_one_batch_of_one():
    executor = Doubling(specs((None, 3)))
    plan = ModelPlan.of(Model("s", "m.mindir", batching=Batching(warm_up=False)), executor.input_specs, WHERE)
    assert plan.warm_up_sizes() == (1,)
    assert [size for size, _ in executor.warm_up(plan).compiled] == [1]


def test_pruning_times_each_bucket_and_keeps_a_prefix_ending_at_the_largest():
    executor = Doubling(specs((None, 3)))
    batching = Batching(max_batch_size=4, prune_buckets=True)
    plan = ModelPlan.of(Model("s", "m.mindir", batching=batching), executor.input_specs, WHERE)
    assert plan.prunes
    result = executor.warm_up(plan)
    assert result.buckets is not None and result.buckets[-1] == 4
    assert executor.runs.count(4) == 4  # compiled once, then timed three times


def test_nothing_to_warm_up_without_known_shapes():
    plan = ModelPlan.of(Model("s", double), None, WHERE)
    assert CallableExecutor(double).warm_up(plan) == WarmUp((), None)
    assert plan.warmed(WarmUp((), None)).warmed_up == ()


def test_a_failed_warm_up_is_a_load_error_naming_the_model():
    executor = Doubling(specs((None, 3)), fail=True)
    plan = ModelPlan.of(Model("s", "m.mindir"), executor.input_specs, WHERE)
    with pytest.raises(
        LoadError,
        match=r"^servable 's' version 1: model 'm' failed its warm-up run: model 'm' failed: ValueError: no",
    ):
        executor.warm_up(plan)


def test_run_batch_pads_to_the_bucket_and_slices_the_outputs():
    executor = Doubling(specs((None, 3)))
    plan = ModelPlan.of(Model("s", "m.mindir"), executor.input_specs, WHERE)
    outcomes = run_batch(plan, executor, [(np.ones(3, np.float32),)] * 3)
    assert executor.runs == [4] and len(outcomes) == 3
    np.testing.assert_array_equal(outcomes[0][0], np.full(3, 2, np.float32))


def test_run_batch_checks_the_output_count():
    plan = ModelPlan.of(Model("s", lambda x: (x, x)), None, WHERE)
    failure = run_batch(plan, CallableExecutor(lambda x: (x, x)), [(np.ones(3),)])
    assert failure.detail == "model 'model' returned 2 outputs; it is declared with outputs=1"


# -- sources ----------------------------------------------------------------------------


class Cell:
    """Looks like a MindSpore nn.Cell to ``is_cell`` (MindSpore is not imported)."""


Cell.__module__ = "mindspore.nn.cell"


class Net(Cell):
    pass


def test_each_kind_of_source_has_its_strategy():
    file, cell, function = source_of("net.mindir"), source_of(Net()), source_of(double)
    assert [type(s) for s in (file, cell, function)] == [MindirFile, CellSource, CallableSource]
    assert [s.kind for s in (file, cell, function)] == ["mindir", "cell", "callable"]
    assert [s.needs_files for s in (file, cell, function)] == [True, False, False]
    assert [s.uses_mindspore for s in (file, cell, function)] == [True, True, False]
    assert [s.keeps_inputs for s in (file, cell, function)] == [False, False, True]
    assert [s.shippable for s in (file, cell, function)] == [True, False, True]
    assert [s.default_name() for s in (file, cell, function)] == ["net", "Net", "double"]
    assert [s.describe() for s in (file, cell, function)] == ["net.mindir", "Net", "double"]
    assert [s.label() for s in (file, cell, function)] == ["net.mindir", "Net", "function"]


def test_a_model_kind_and_file_options_come_from_its_source():
    plain = Model("s", "net.mindir", sha256="a" * 64)
    assert (plain.kind, plain.source, plain.sha256, plain.dec_key) == ("mindir", "net.mindir", "a" * 64, None)
    encrypted = Model("s", "net.mindir", dec_key=KEY, dec_mode="AES-CBC")
    assert isinstance(encrypted.origin, EncryptedMindirFile)
    assert (encrypted.dec_key, encrypted.dec_mode) == (KEY, "AES-CBC")
    assert "0123" not in repr(encrypted.origin)  # the key stays out of reprs
    with pytest.raises(DefinitionError, match="dec_key only applies to MindIR files"):
        Model("s", double, dec_key=KEY)


def test_a_relative_file_is_located_in_the_version_directory(tmp_path):
    source = source_of("net.mindir")
    assert source.located(str(tmp_path)) == os.path.join(str(tmp_path), "net.mindir")
    assert source_of(double).located(str(tmp_path)) == "double"


def test_opening_a_missing_file_names_it(tmp_path):
    with pytest.raises(
        LoadError, match=r"^servable 's' version 1: model 'net': file '.*net.mindir' does not exist"
    ) as caught:
        source_of("net.mindir").open("net", str(tmp_path), (None, 0), WHERE)
    assert caught.value.model_file == str(tmp_path / "net.mindir")


def test_a_callable_opens_as_a_callable_executor():
    executor = source_of(double).open("double", None, (None, 0), WHERE)
    assert isinstance(executor, CallableExecutor) and executor.input_specs is None

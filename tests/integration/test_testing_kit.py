"""mindserve.testing: model replacement, the deterministic runtime, the pytest plugin and the
per-instance error assertions, used the way docs/testing.md shows."""

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import mindserve
from gated import Gate
from mindserve.testing import (
    DeterministicRuntime,
    ServableDouble,
    assert_instance_errors,
    raises_instance_errors,
    replace_models,
)
from mindserve.testing._threads import leaked_threads, mindserve_threads
from paths import ROOT

SRC = os.path.join(ROOT, "src")
X = np.ones(3, np.float32)
PAIR = (np.float32(0), np.float32(0))  # fixed outputs for the model "pair"


def file_servable(directory="/nonexistent/mlp", **batching):
    """A servable of two MindIR files that are nowhere on disk, and a stage using Model.call."""
    svc = mindserve.Servable("files", directory=directory)
    mlp = svc.model("mlp.mindir", batching=mindserve.Batching(**batching) if batching else None)
    pair = svc.model("pair.mindir", outputs=2)

    @svc.stage
    def through_call(x):
        return mlp.call(x) * 10

    @svc.method(outputs="y")
    def predict(x):
        return mlp(x)

    @svc.method(outputs=["a", "b"])
    def both(x):
        return pair(x)

    @svc.method(outputs="y")
    def called(x):
        return through_call(x)

    return svc


# -- replace_models ------------------------------------------------------------------------


def test_a_callable_replaces_a_mindir_model_with_no_file(rt):
    svc = file_servable()
    batches = []

    def fake(x):
        batches.append(x.shape)
        return x.sum(axis=1, keepdims=True)

    info = rt.start(replace_models(svc, {"mlp": fake, "pair": (np.float32(1), np.zeros(2))}))
    assert info.version == 1 and {m.name: m.kind for m in info.models} == {
        "mlp": "callable",
        "pair": "callable",
    }
    results = rt.infer("files", "predict", [{"x": X}, {"x": 2 * X}])
    assert [r["y"].tolist() for r in results] == [[3.0], [6.0]]
    assert batches == [(2, 3)]  # the fake gets the batch, as the model would
    assert rt.infer("files", "called", [{"x": X}])[0]["y"].tolist() == [30.0]  # Model.call reaches it
    # The original is untouched: its models are files, which do not exist.
    assert svc.models["mlp"].kind == "mindir"
    with pytest.raises(mindserve.LoadError, match="does not exist"):
        rt.start(svc)


def test_a_fixed_output_is_repeated_per_instance(rt):
    svc = file_servable()
    rt.start(replace_models(svc, {"mlp": np.array([1.5, 2.5], np.float32), "pair": (7, np.eye(2))}))
    results = rt.infer("files", "predict", [{"x": X}] * 3)
    assert [r["y"].tolist() for r in results] == [[1.5, 2.5]] * 3
    assert results[0]["y"].dtype == np.float32
    both = rt.infer("files", "both", [{"x": X}, {"x": X}])
    assert [int(r["a"]) for r in both] == [7, 7]
    assert both[1]["b"].tolist() == np.eye(2).tolist()


def test_a_fixed_output_of_a_model_without_batch_dim_is_returned_as_is(rt):
    svc = mindserve.Servable("nobatch")
    m = svc.model("m.mindir", with_batch_dim=False)
    svc.add_method(lambda x: m(x), name="f")
    rt.start(replace_models(svc, {"m": np.arange(4)}))
    results = rt.infer("nobatch", "f", [{"x": X}, {"x": X}])
    assert [r["output"].tolist() for r in results] == [[0, 1, 2, 3]] * 2


def test_replacement_errors_name_what_is_wrong():
    svc = file_servable()
    with pytest.raises(
        mindserve.InvalidArgumentError,
        match=r"no model named 'mpl'; its models are \['mlp', 'pair'\]\. Hint: did you mean 'mlp'\?",
    ):
        replace_models(svc, {"mpl": X})
    with pytest.raises(
        mindserve.InvalidArgumentError, match=r"outputs=2; the replacement gives 1 fixed output"
    ):
        replace_models(svc, {"pair": X})
    with pytest.raises(mindserve.ArgumentTypeError, match="a fixed output must be a numpy array or a number"):
        replace_models(svc, {"mlp": object()})
    with pytest.raises(mindserve.ArgumentTypeError, match="got NoneType"):
        replace_models(svc, {"mlp": None})
    with pytest.raises(mindserve.ArgumentTypeError, match=r"takes a mindserve\.Servable"):
        replace_models("files", {"mlp": X})
    with pytest.raises(mindserve.ArgumentTypeError, match="takes a dict"):
        replace_models(svc, [("mlp", X)])

    async def coroutine(x):
        return x

    with pytest.raises(mindserve.InvalidArgumentError, match="async def"):
        replace_models(svc, {"mlp": coroutine})


def test_a_replaced_model_failing_fails_its_instances(rt):
    def broken(x):
        raise ValueError("nope")

    rt.start(replace_models(file_servable(), {"mlp": broken, "pair": PAIR}))
    with raises_instance_errors({0: (mindserve.ModelError, "ValueError: nope")}) as caught:
        rt.infer("files", "predict", [{"x": X}])
    assert isinstance(caught.errors[0].__cause__, ValueError)


def test_replacement_is_a_view_of_the_original(rt):
    """Methods defined on the original after replace_models() are served too."""
    svc = file_servable()
    double = replace_models(svc, {"mlp": lambda x: x, "pair": PAIR})
    mlp = svc.models["mlp"]
    svc.add_method(lambda x: mlp(x), name="later")
    rt.start(double)
    assert rt.infer("files", "later", [{"x": X}])[0]["output"].tolist() == X.tolist()
    assert "replaced" in repr(double)


def test_replacing_twice_replaces_again(rt):
    svc = file_servable()
    once = replace_models(svc, {"mlp": lambda x: x, "pair": PAIR})
    twice = replace_models(once, {"mlp": np.array([9.0], np.float32)})
    rt.start(twice)
    assert rt.infer("files", "called", [{"x": X}])[0]["y"].tolist() == [90.0]


def test_a_replaced_model_runs_in_a_worker_process():
    """The stand-in is sent to the worker; a stage's Model.call there reaches it; batches
    still form by the deterministic rules, in this process."""
    with DeterministicRuntime() as rt:
        info = rt.start(
            replace_models(file_servable(max_batch_size=2), {"mlp": lambda x: x * 3, "pair": PAIR}), workers=1
        )
        assert len(info.workers) == 1
        assert [r["y"].tolist() for r in rt.infer("files", "predict", [{"x": X}] * 3)] == [[3.0] * 3] * 3
        assert rt.infer("files", "called", [{"x": X}])[0]["y"].tolist() == [30.0] * 3
        assert rt.status()[0].models[0].batches == 3  # 2 + 1, then 1


def test_a_compat_servable_runs_with_its_model_replaced(rt):
    """A MindSpore Serving servable_config.py, its tensor_add.mindir nowhere on disk."""
    from mindserve.compat import load_servable

    svc = load_servable(os.path.join(ROOT, "tests", "compat_servables"), "add")
    rt.start(replace_models(svc, {"tensor_add.mindir": lambda a, b: a + b}))
    x1, x2 = np.array([1, 2, 3], np.int32), np.array([4, 5, 6], np.int32)
    assert rt.infer("add", "add_cast", [{"x1": x1, "x2": x2}])[0]["y"].tolist() == [5.0, 7.0, 9.0]


def test_replace_one_model_and_run_the_other_on_mindspore(exported, rt):
    """A real MindIR model runs beside a replaced one, in the same servable version."""
    from reference import run_net

    directory = os.path.dirname(os.path.dirname(exported["paths"]["mlp_dynamic"]))
    svc = mindserve.Servable("mixed", directory=directory)
    mlp = svc.model("mlp.mindir")
    missing = svc.model("missing.mindir")
    svc.add_method(lambda x: (mlp(x), missing(x)), name="f", outputs=["real", "fake"])
    rt.start(replace_models(svc, {"missing": np.float32(-1)}), version=1)
    x = np.linspace(0, 1, 16, dtype=np.float32)
    (result,) = rt.infer("mixed", "f", [{"x": x}])
    np.testing.assert_allclose(result["real"], run_net(exported["nets"]["mlp_v1"], x[None])[0], rtol=1e-5)
    assert result["fake"] == np.float32(-1)


def test_nothing_imports_mindspore_or_pytest(tmp_path):
    """Replaced models run without MindSpore; import mindserve imports neither the kit nor pytest."""
    code = textwrap.dedent(
        """
        import sys, numpy as np, mindserve
        assert "mindserve.testing" not in sys.modules and "pytest" not in sys.modules
        from mindserve.testing import DeterministicRuntime, replace_models
        svc = mindserve.Servable("s", directory="nowhere")
        m = svc.model("m.mindir")
        svc.add_method(lambda x: m(x), name="f")
        with DeterministicRuntime() as rt:
            rt.start(replace_models(svc, {"m": np.float32(2)}))
            print(rt.infer("s", "f", [{"x": np.ones(3, np.float32)}])[0]["output"])
        print("mindspore" in sys.modules, "pytest" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2.0", "False", "False"]


# -- the deterministic runtime -----------------------------------------------------------


def wait_queued(rt, servable, model, count):
    """Until ``count`` instances wait in the model's queue (a test-only look inside)."""
    scheduler = rt._hosted[servable].default().models[model].scheduler
    deadline = time.monotonic() + 30
    while scheduler.queued < count:
        assert time.monotonic() < deadline, f"only {scheduler.queued} of {count} instances queued"
        threading.Event().wait(0.001)


def concurrent_batches(runtime, serve=lambda svc: svc):
    """Three callers of 2 instances each queue while a first call holds the model; return
    the callers found in each batch that followed (``serve``: what is started for the
    servable)."""
    gate = Gate()
    seen = []

    def model(x):
        if x[0, 0] < 0:  # the first call: hold the model until the others queued
            return gate(x)
        seen.append(sorted({int(v) for v in x[:, 0]}))
        return x

    svc = mindserve.Servable("calls")
    m = svc.model(model, name="model", batching=mindserve.Batching(max_batch_size=8))
    svc.add_method(lambda x: m(x), name="f")
    runtime.start(serve(svc))
    first = threading.Thread(target=runtime.infer, args=("calls", "f", [{"x": -X}]))
    first.start()
    assert gate.entered.wait(30)
    callers = [
        threading.Thread(target=runtime.infer, args=("calls", "f", [{"x": c * X}] * 2)) for c in (1, 2, 3)
    ]
    for thread in callers:
        thread.start()
    wait_queued(runtime, "calls", "model", 6)
    gate.open()
    for thread in [first, *callers]:
        thread.join(30)
    return seen


def test_calls_never_share_a_batch_in_the_deterministic_runtime():
    with DeterministicRuntime() as rt:
        seen = concurrent_batches(rt)
    assert sorted(seen) == [[1], [2], [3]]
    # The same calls do share batches in a Runtime: the rule is what the mode changes.
    with mindserve.Runtime() as rt:
        assert concurrent_batches(rt) == [[1, 2, 3]]


def test_a_double_made_deterministic_batches_each_call_alone_in_a_runtime():
    """The switch a ServableDouble carries reaches a plain Runtime's loading too."""
    with mindserve.Runtime() as rt:
        seen = concurrent_batches(rt, lambda svc: ServableDouble(svc, {}, deterministic=True))
    assert sorted(seen) == [[1], [2], [3]]


def test_a_call_is_split_in_order_by_key_and_max_batch_size(mindserve_runtime):
    sizes = []

    def model(x):
        sizes.append((x.dtype.name, len(x)))
        return x

    svc = mindserve.Servable("split")
    m = svc.model(model, name="model", batching=mindserve.Batching(max_batch_size=2, max_delay=5.0))
    svc.add_method(lambda x: m(x), name="f")
    mindserve_runtime.start(svc)
    x64 = X.astype(np.float64)
    mindserve_runtime.infer("split", "f", [{"x": X}, {"x": x64}, {"x": X}, {"x": X}, {"x": x64}])
    # max_delay is ignored (no wait for more); float32 and float64 never share a batch.
    assert sizes == [("float32", 2), ("float64", 2), ("float32", 1)]


def test_async_calls_form_their_own_batches(mindserve_runtime):
    batches = []

    def model(x):
        batches.append(sorted({int(v) for v in x[:, 0]}))
        return x

    svc = mindserve.Servable("aio")
    m = svc.model(model, name="model", batching=mindserve.Batching(max_batch_size=3))
    svc.add_method(lambda x: m(x), name="f")
    mindserve_runtime.start(svc)

    async def main():
        calls = [mindserve_runtime.ainfer("aio", "f", [{"x": c * X}] * 4) for c in (1, 2, 3)]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert [int(r[0]["output"][0]) for r in results] == [1, 2, 3]
    assert sorted(batches) == [[1], [1], [2], [2], [3], [3]]  # 4 instances: batches of 3 and 1


def test_batched_stages_batch_per_call_too(mindserve_runtime):
    sizes = []

    svc = mindserve.Servable("stages")

    @svc.stage(batch_size=2)
    def double(xs):
        sizes.append(len(xs))
        return [x * 2 for x in xs]

    svc.add_method(lambda x: double(x), name="f")
    mindserve_runtime.start(svc)
    results = mindserve_runtime.infer("stages", "f", [{"x": X}] * 3)
    assert sizes == [2, 1] and results[2]["output"].tolist() == [2.0] * 3


def test_the_deterministic_runtime_does_not_warm_up(exported):
    directory = os.path.dirname(os.path.dirname(exported["paths"]["mlp_dynamic"]))
    svc = mindserve.Servable("mlp", directory=directory)
    mlp = svc.model("mlp.mindir", batching=mindserve.Batching(max_batch_size=4))
    svc.add_method(lambda x: mlp(x), name="f")
    with DeterministicRuntime() as rt:
        info = rt.start(svc, version=1)
        assert info.models[0].warmed_up == ()
        results = rt.infer("mlp", "f", [{"x": np.zeros(16, np.float32)}] * 5)
        assert len(results) == 5
        assert rt.status()[0].models[0].batches == 2  # 5 instances: batches of 4 and 1
        assert repr(rt).startswith("<mindserve.testing.DeterministicRuntime running")
    with pytest.raises(TypeError):
        DeterministicRuntime(warm_up=True)


def test_update_keeps_the_deterministic_rules(mindserve_runtime):
    sizes = []

    def model(x):
        sizes.append(len(x))
        return x

    svc = mindserve.Servable("upd")
    m = svc.model(model, name="model", batching=mindserve.Batching(max_batch_size=2))
    svc.add_method(lambda x: m(x), name="f")
    mindserve_runtime.start(svc)
    mindserve_runtime.update("upd")
    mindserve_runtime.update(svc)
    mindserve_runtime.infer("upd", "f", [{"x": X}] * 3)
    assert sizes == [2, 1]
    definition = mindserve_runtime._hosted["upd"].default().definition
    assert definition.deterministic


# -- the assertions ----------------------------------------------------------------------


def outcomes():
    """One good instance and two failed ones, as infer(..., return_exceptions=True) gives."""
    return [
        {"y": 1},
        mindserve.InvalidInputError("input 'x' is missing", index=1),
        mindserve.ModelError("model 'm' failed: ValueError: boom", index=2),
    ]


def test_assert_instance_errors_passes_and_returns_the_errors():
    errors = assert_instance_errors(
        outcomes(), {1: mindserve.InvalidInputError, 2: (mindserve.ModelError, "boom")}
    )
    assert sorted(errors) == [1, 2]
    inference = mindserve.InferenceError(outcomes())
    assert assert_instance_errors(inference, {1: ValueError, 2: mindserve.InstanceError})[2].index == 2


def test_assert_instance_errors_lists_every_difference():
    with pytest.raises(AssertionError) as caught:
        assert_instance_errors(
            outcomes(),
            {0: mindserve.StageError, 1: (mindserve.InvalidInputError, "unknown"), 5: mindserve.ModelError},
        )
    message = str(caught.value)
    assert message.startswith("4 of 3 instances differ from what was expected:")
    assert "instance 5: expected ModelError, but the request has 3 instances" in message
    assert "instance 0: expected StageError, succeeded with {'y': 1}" in message
    assert (
        "instance 1: expected InvalidInputError matching 'unknown', failed with InvalidInputError whose message does not match"
        in message
    )
    assert (
        "instance 2: expected success, failed with ModelError: instance 2: model 'm' failed: ValueError: boom"
        in message
    )
    with pytest.raises(
        AssertionError, match="instance 1: expected ModelError, failed with InvalidInputError"
    ):
        assert_instance_errors(outcomes(), {1: mindserve.ModelError, 2: mindserve.ModelError})


def test_assert_instance_errors_on_a_whole_call_error():
    with pytest.raises(AssertionError, match="the whole call failed with DeadlineExceededError: late"):
        assert_instance_errors(mindserve.DeadlineExceededError("late"), {0: mindserve.ModelError})


@pytest.mark.parametrize(
    ("outcome", "expected", "error", "match"),
    [
        ("abc", {}, mindserve.ArgumentTypeError, "takes an InferenceError or the list"),
        (None, {}, mindserve.ArgumentTypeError, "got NoneType"),
        ([], [1], mindserve.ArgumentTypeError, "a dict of instance index to error class"),
        ([], {"1": ValueError}, mindserve.ArgumentTypeError, "an instance index must be an int; got '1'"),
        ([], {True: ValueError}, mindserve.ArgumentTypeError, "an instance index must be an int"),
        ([], {-1: ValueError}, mindserve.InvalidArgumentError, "must be >= 0; got -1"),
        ([], {0: "ValueError"}, mindserve.ArgumentTypeError, "expected an error class such as"),
        ([], {0: ValueError()}, mindserve.ArgumentTypeError, "expected an error class such as"),
        ([], {0: (ValueError,)}, mindserve.ArgumentTypeError, r"\(error class, pattern\)"),
    ],
)
def test_assert_instance_errors_rejects_bad_arguments(outcome, expected, error, match):
    with pytest.raises(error, match=match):
        assert_instance_errors(outcome, expected)


def test_raises_instance_errors(rt):
    rt.start(replace_models(file_servable(), {"mlp": lambda x: x, "pair": PAIR}))
    with raises_instance_errors({1: mindserve.InvalidInputError}) as caught:
        rt.infer("files", "predict", [{"x": X}, {"y": X}])
    assert caught.results[0]["y"].tolist() == X.tolist() and list(caught.errors) == [1]
    with pytest.raises(
        AssertionError, match=r"expected an InferenceError with instances \[0\] failed; the block raised none"
    ):
        with raises_instance_errors({0: mindserve.InvalidInputError}):
            rt.infer("files", "predict", [{"x": X}])
    with pytest.raises(AssertionError, match="instance 0: expected success"):
        with raises_instance_errors({}):
            rt.infer("files", "predict", [{"y": X}])
    with pytest.raises(mindserve.ArgumentTypeError):
        with raises_instance_errors({0: 1}):
            pass
    with pytest.raises(mindserve.RuntimeClosedError):  # other errors go through
        with raises_instance_errors({0: mindserve.InvalidInputError}):
            raise mindserve.RuntimeClosedError("closed")


# -- the pytest plugin -------------------------------------------------------------------


def test_leaked_threads_finds_a_thread_that_does_not_end():
    gate = Gate()
    before = mindserve_threads()
    rt = mindserve.Runtime()
    svc = mindserve.Servable("leak")
    m = svc.model(gate, name="model")
    svc.add_method(lambda x: m(x), name="f")
    rt.start(svc)
    rt.infer_async("leak", "f", [{"x": X}])
    assert gate.entered.wait(30)
    rt.close(grace=0)
    left = leaked_threads(before, timeout=0.05)
    assert left and all(t.name.startswith("mindserve") for t in left)
    gate.open()
    assert leaked_threads(before) == []


def plugin_installed():
    """Whether mindserve's pytest11 entry point is installed (pip install of this checkout)."""
    import importlib.metadata

    return any(
        e.value == "mindserve.testing.pytest_plugin"
        for e in importlib.metadata.entry_points(group="pytest11")
    )


def run_pytest(directory, *args):
    """pytest in a subprocess on ``directory``, with the plugin loaded as installing mindserve
    does (named on the command line when this checkout is not installed)."""
    plugin = [] if plugin_installed() else ["-p", "mindserve.testing.pytest_plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, *args],
        capture_output=True,
        text=True,
        cwd=directory,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=300,
    )


def test_the_documented_example_passes(tmp_path):
    """examples/test_sentiment.py, run by pytest in a fresh directory, as a user would."""
    for name in ("sentiment.py", "test_sentiment.py"):
        shutil.copy(os.path.join(ROOT, "examples", name), tmp_path)
    out = run_pytest(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 passed" in out.stdout
    with open(os.path.join(ROOT, "docs", "testing.md"), encoding="utf-8") as handle:
        docs = handle.read()
    with open(os.path.join(ROOT, "examples", "test_sentiment.py"), encoding="utf-8") as handle:
        assert handle.read() in docs  # the docs show the file that is run, whole


def test_the_fixture_closes_the_runtime_and_fails_a_test_that_leaks(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from mindserve.testing import pytest_plugin\npytest_plugin.CLOSE_TIMEOUT = 0.2\n"
    )
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import threading
            import numpy as np
            import mindserve

            kept = []
            never = threading.Event()

            def test_closed(mindserve_runtime):
                kept.append(mindserve_runtime)
                assert "DeterministicRuntime" in repr(mindserve_runtime)

            def test_was_closed():
                with __import__("pytest").raises(mindserve.RuntimeClosedError):
                    kept[0].start(mindserve.Servable("late"))

            def test_leaks(mindserve_runtime):
                svc = mindserve.Servable("stuck")
                m = svc.model(lambda x: never.wait() and x, name="model")
                svc.add_method(lambda x: m(x), name="f")
                mindserve_runtime.start(svc)
                mindserve_runtime.infer_async("stuck", "f", [{"x": np.ones(2)}])
            """
        )
    )
    out = run_pytest(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "3 passed, 1 error" in out.stdout  # test_leaks passed, and failed its teardown
    assert "ERROR at teardown of test_leaks" in out.stdout
    assert (
        "mindserve_runtime: 1 thread of the runtime still runs after close(): [\"mindserve:servable 'stuck' version 1: model 'model'#0\"]"
        in out.stdout
    )


def test_the_fixture_can_be_imported_without_the_plugin(tmp_path):
    (tmp_path / "test_user.py").write_text(
        "from mindserve.testing.pytest_plugin import mindserve_runtime\n"
        "def test_it(mindserve_runtime):\n    assert mindserve_runtime.status() == []\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_setup_declares_the_pytest_entry_point(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "setup.py"), "-q", "egg_info", "--egg-base", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (info,) = tmp_path.glob("*.egg-info")
    entry_points = (info / "entry_points.txt").read_text()
    assert "[pytest11]\nmindserve = mindserve.testing.pytest_plugin" in entry_points

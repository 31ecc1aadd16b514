"""Worker processes: real MindSpore in real child processes, real crashes, real cleanup."""

from __future__ import annotations

import glob
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

import mindserve
import notebooks
from mindserve._workers.transfer import PREFIX, SHM_DIR
from observers import WarmUps
from reference import run_net
from servables import mlp_servable
from waiting import wait_for


def our_segments() -> list[str]:
    return glob.glob(os.path.join(SHM_DIR, f"{PREFIX}{os.getpid()}-*"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def worker_pids(rt, name):
    return [w.pid for w in rt.servable_status(name).workers]


def pool_of(rt, name):
    """The worker pool of the default version (private: to look at its shared memory)."""
    return rt._hosted[name].default().placement.pool


@pytest.fixture(scope="module")
def mlp_workers(exported):
    """An MLP servable served by two worker processes, and the network for reference (warm-up in
    workers: test_workers_warm_up_and_their_logs_and_reports_reach_the_main_process)."""
    with mindserve.Runtime() as runtime:
        runtime.start(mlp_servable(os.path.join(exported["root"], "mlp")), version=1, workers=2)
        yield runtime, exported["nets"]["mlp_v1"]


# -- results and status -------------------------------------------------------------


def test_results_from_workers_equal_in_process_results_bit_for_bit(mlp_workers, exported):
    workers_rt, _ = mlp_workers
    rng = np.random.default_rng(7)
    calls = [[{"x": rng.normal(size=16).astype(np.float32)} for _ in range(n)] for n in (1, 7, 64, 100)]
    with mindserve.Runtime() as local:
        local.start(mlp_servable(os.path.join(exported["root"], "mlp")), version=1)
        for instances in calls:
            here = local.infer("mlp", "predict", instances)
            there = workers_rt.infer("mlp", "predict", instances)
            for a, b in zip(here, there):
                assert a["logits"].dtype == b["logits"].dtype
                assert np.array_equal(a["logits"], b["logits"])


def test_metrics_count_batches_run_by_workers_and_list_the_workers(mlp_workers):
    rt, _ = mlp_workers
    before = rt.metrics().model("mlp", "mlp")
    rt.infer("mlp", "predict", [{"x": np.zeros(16, np.float32)}] * 3)
    snapshot = rt.metrics()
    model = snapshot.model("mlp", "mlp")
    assert model.instances - before.instances == 3 and model.load_seconds > 0
    workers = snapshot.servable("mlp").workers
    assert [(w.index, w.state) for w in workers] == [(0, "ready"), (1, "ready")]


def test_status_lists_each_worker(mlp_workers):
    rt, _ = mlp_workers
    rt.infer("mlp", "predict", [{"x": np.zeros(16, np.float32)}])
    status = rt.servable_status("mlp")
    assert len(status.workers) == 2
    assert [w.index for w in status.workers] == [0, 1]
    for worker in status.workers:
        assert worker.state == "ready" and worker.device_id == 0 and worker.restarts == 0
        assert worker.pid is not None and worker.pid != os.getpid() and alive(worker.pid)
    assert sum(w.batches for w in status.workers) >= 1
    (info,) = rt.status()
    assert info.workers == status.workers and info.device == "CPU:0"


def test_many_threads_get_their_own_results(mlp_workers):
    rt, net = mlp_workers
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(64, 16)).astype(np.float32)
    expected = run_net(net, inputs)
    got = [None] * 64

    def call(i):
        got[i] = rt.infer("mlp", "predict", [{"x": inputs[i]}])[0]["logits"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.stack(got), expected, rtol=1e-5, atol=1e-6)


def test_bad_input_is_checked_in_the_main_process(mlp_workers):
    rt, _ = mlp_workers
    results = rt.infer(
        "mlp",
        "predict",
        [{"x": np.zeros(16, np.float32)}, {"x": np.zeros(5, np.float32)}],
        return_exceptions=True,
    )
    assert results[0]["logits"].shape == (10,)
    assert isinstance(results[1], mindserve.InvalidInputError)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"workers": -1}, "workers must be an int >= 0"),
        ({"workers": 1.5}, "workers must be an int >= 0"),
        ({"device_ids": []}, "device_ids must be a non-empty list"),
        ({"device_ids": [0, -1]}, "device_ids must be a non-empty list"),
        ({"device_ids": "0"}, "device_ids must be a non-empty list"),
        ({"workers": 2, "device_ids": [0]}, "disagree"),
    ],
)
def test_bad_worker_arguments_are_refused(rt, arguments, message):
    svc = mindserve.Servable("s")
    svc.add_method(lambda x: x, name="same")
    with pytest.raises(ValueError, match=message):
        rt.start(svc, **arguments)


# -- Python stages and callables in workers ------------------------------------------------


def double(x):
    return x * 2


def test_batched_stages_and_callable_models_run_in_the_workers(rt):
    """Defined inside a test function (closures, a local list): cloudpickle ships them."""
    offset = 10
    svc = mindserve.Servable("pids")
    model = svc.model(double)

    @svc.stage(batch_size=4, outputs=2)
    def where(xs):
        return [(x + offset, np.int64(os.getpid())) for x in xs]

    @svc.stage(outputs=1)
    def here(x):
        return np.int64(os.getpid())

    @svc.method(outputs=("y", "worker", "caller"))
    def run(x):
        y, pid = where(model(x))
        return y, pid, here(x)

    rt.start(svc, workers=2)
    results = rt.infer("pids", "run", [{"x": np.float32(i)} for i in range(6)])
    workers = set(worker_pids(rt, "pids"))
    for i, result in enumerate(results):
        assert result["y"] == 2 * i + offset
        assert int(result["worker"]) in workers  # batched stage: in a worker
        assert int(result["caller"]) == os.getpid()  # per-instance stage: in the caller's process


def serving_objects() -> int:
    """How many objects of a serving version live in this process: versions, model queues,
    schedulers (in a worker process: none)."""
    import gc

    from mindserve._batching.scheduler import Scheduler
    from mindserve._serving.model_queue import LoadedModel
    from mindserve._serving.running import LoadedServable

    kinds = (Scheduler, LoadedModel, LoadedServable)
    return sum(issubclass(type(o), kinds) for o in gc.get_objects())  # type(): no weak proxy raises


def test_a_worker_hosts_executors_and_stages_not_a_serving_version(rt, exported):
    """The worker builds no version, model queue or scheduler (the queues stay in this
    process); a batched stage's Model.call there runs the worker's MindIR model."""
    svc = mindserve.Servable("hosted", directory=os.path.join(exported["root"], "mlp"))
    mlp = svc.model("mlp.mindir")

    @svc.stage(batch_size=4, outputs=2)
    def logits(xs):
        called = mlp.call_many([(x,) for x in xs])
        return [(y, np.int64(serving_objects())) for (y,) in called]

    @svc.method(outputs=("logits", "objects"))
    def predict(x):
        return logits(x)

    rt.start(svc, version=1, workers=1)
    assert serving_objects() > 0  # this process's version: the count sees them
    xs = np.random.default_rng(3).normal(size=(3, 16)).astype(np.float32)
    results = rt.infer("hosted", "predict", [{"x": x} for x in xs])
    expected = run_net(exported["nets"]["mlp_v1"], xs)
    for result, want in zip(results, expected):
        assert int(result["objects"]) == 0
        np.testing.assert_allclose(result["logits"], want, rtol=1e-5, atol=1e-6)


def test_errors_raised_in_a_worker_reach_the_instance_with_the_same_message(rt):
    svc = mindserve.Servable("fails")

    def model(x):
        if (x < 0).any():
            raise ValueError("negative input")
        return x

    m = svc.model(model)

    @svc.stage(batch_size=8)
    def check(xs):
        if any(x > 100 for x in xs):
            raise OverflowError("too big")
        return xs

    svc.add_method(lambda x: check(m(x)), name="run")
    rt.start(svc, workers=1)
    results = rt.infer(
        "fails",
        "run",
        [{"x": np.float32(1)}, {"x": np.float32(-1)}, {"x": np.float32(101)}],
        return_exceptions=True,
    )
    assert results[0]["output"] == 1
    assert isinstance(results[1], mindserve.ModelError)
    assert "model 'model' failed: ValueError: negative input" in str(results[1])
    assert isinstance(results[2], mindserve.StageError)
    assert "OverflowError: too big" in str(results[2])
    assert "In the worker process" in str(results[2].__cause__.__cause__)  # the worker's traceback


def test_a_result_that_cannot_be_sent_back_fails_its_instance(rt):
    svc = mindserve.Servable("unsendable")

    @svc.stage(batch_size=4)
    def make(xs):
        return [threading.Lock() if x == 1 else x for x in xs]

    svc.add_method(lambda x: make(x), name="run")
    rt.start(svc, workers=1)
    results = rt.infer("unsendable", "run", [{"x": 0}, {"x": 1}], return_exceptions=True)
    assert results[0]["output"] == 0
    assert isinstance(results[1], mindserve.StageError)
    assert "cannot be sent from the worker process" in str(results[1])


# -- crashes ------------------------------------------------------------------------------


def test_a_worker_killed_under_load_loses_no_request(exported):
    with mindserve.Runtime() as rt:
        rt.start(mlp_servable(os.path.join(exported["root"], "mlp")), version=1, workers=2)
        net = exported["nets"]["mlp_v1"]
        rng = np.random.default_rng(11)
        inputs = rng.normal(size=(64, 16)).astype(np.float32)
        expected = run_net(net, inputs)
        victim = worker_pids(rt, "mlp")[0]
        stop = threading.Event()
        problems: list[str] = []
        counts = [0] * 64

        def caller(i):
            while not stop.is_set():
                try:
                    (out,) = rt.infer("mlp", "predict", [{"x": inputs[i]}], timeout=60)
                except Exception as exc:
                    problems.append(f"{i}: {type(exc).__name__}: {exc}")
                    return
                if not np.allclose(out["logits"], expected[i], rtol=1e-5, atol=1e-6):
                    problems.append(f"{i}: wrong answer")
                counts[i] += 1

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        assert wait_for(lambda: sum(counts) > 300)
        os.kill(victim, signal.SIGKILL)
        before = sum(counts)
        assert wait_for(lambda: rt.servable_status("mlp").workers[0].restarts == 1, 60)
        assert wait_for(lambda: sum(counts) > before + 300)
        stop.set()
        for t in threads:
            t.join(60)
        assert not problems, problems[:5]
        assert all(counts), "every caller got answers"
        (first, second) = rt.servable_status("mlp").workers
        assert first.state == "ready" and first.pid != victim and "SIGKILL" in first.last_error
        assert second.restarts == 0
        # The dead worker's shared memory went with it; the others' is still there.
        segments = glob.glob(os.path.join(SHM_DIR, pool_of(rt, "mlp").prefix + "*"))
        assert segments and not [
            s for s in segments if os.path.basename(s).startswith(f"{pool_of(rt, 'mlp').prefix}0-0-")
        ]


class DiesAtLoadWhenFlagged:
    """A callable model that kills the worker loading it while ``flag`` exists."""

    def __init__(self, flag):
        self.flag = flag

    def __call__(self, x):
        return x * 2

    def __setstate__(self, state):
        self.__dict__.update(state)
        if os.path.exists(self.flag):
            os._exit(3)


def flagged_servable(flag):
    svc = mindserve.Servable("flagged")
    model = svc.model(DiesAtLoadWhenFlagged(str(flag)))
    svc.add_method(lambda x: model(x), name="run")
    return svc


def test_a_worker_that_keeps_dying_at_start_is_given_up_and_calls_fail_fast(rt, tmp_path):
    flag = tmp_path / "die"
    rt.start(flagged_servable(flag), workers=1)
    assert rt.infer("flagged", "run", [{"x": np.float32(2)}])[0]["output"] == 4
    (pid,) = worker_pids(rt, "flagged")
    flag.touch()
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: rt.servable_status("flagged").workers[0].state == "failed", 60)
    (worker,) = rt.servable_status("flagged").workers
    assert "given up after 3 failed starts" in worker.last_error
    assert "exited with code 3" in worker.last_error
    assert worker.pid is None and worker.restarts == 0
    assert not glob.glob(os.path.join(SHM_DIR, pool_of(rt, "flagged").prefix + "*"))
    started = time.monotonic()
    (result,) = rt.infer("flagged", "run", [{"x": np.float32(2)}], return_exceptions=True, timeout=60)
    assert time.monotonic() - started < 10  # at once, not after the timeout
    assert isinstance(result, mindserve.ModelError)
    assert "no worker process is left" in str(result)
    assert isinstance(result.__cause__, mindserve.WorkerError)


def test_a_worker_that_dies_at_first_start_fails_the_start(rt, tmp_path):
    flag = tmp_path / "die"
    flag.touch()
    before = set(our_segments())
    with pytest.raises(
        mindserve.LoadError, match=r"worker 0 \(device id 0\) exited with code 3 while loading"
    ):
        rt.start(flagged_servable(flag), workers=2)
    assert rt.status() == []
    assert set(our_segments()) <= before


def test_a_worker_that_cannot_load_says_why(rt, tmp_path):
    svc = mindserve.Servable("missing", directory=tmp_path)
    (tmp_path / "1").mkdir()
    svc.model("absent.mindir")
    svc.add_method(lambda x: x, name="run")
    with pytest.raises(mindserve.LoadError, match=r"absent.mindir.*does not exist.*\(in worker 0"):
        rt.start(svc, workers=1)


def segfaults_on_666(x):
    if (x == 666).any():
        os.kill(os.getpid(), signal.SIGSEGV)
    return x + 1


def test_a_poison_instance_fails_alone_and_is_not_sent_for_ever(rt):
    svc = mindserve.Servable("poison")
    model = svc.model(segfaults_on_666, batching=mindserve.Batching(max_batch_size=8, max_delay=0.05))
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=2)
    values = [1, 2, 666, 4, 5, 6]
    results = rt.infer(
        "poison", "run", [{"x": np.float32(v)} for v in values], return_exceptions=True, timeout=120
    )
    for value, result in zip(values, results):
        if value == 666:
            assert isinstance(result, mindserve.ModelError)
            assert isinstance(result.__cause__, mindserve.WorkerError)
            assert "SIGSEGV" in str(result) and "not sent again" in str(result)
        else:
            assert result["output"] == value + 1
    assert wait_for(lambda: all(w.state == "ready" for w in rt.servable_status("poison").workers), 60)
    assert rt.infer("poison", "run", [{"x": np.float32(1)}])[0]["output"] == 2


# -- versions -------------------------------------------------------------------------------


def test_hot_update_starts_new_workers_before_the_switch(exported):
    directory = os.path.join(exported["root"], "mlp")
    x = np.ones(16, np.float32)
    with mindserve.Runtime() as rt:
        rt.start(mlp_servable(directory), version=1, workers=1)
        old = worker_pids(rt, "mlp")
        v1 = rt.infer("mlp", "predict", [{"x": x}])[0]["logits"]
        stop = threading.Event()
        failures: list[BaseException] = []

        def caller():
            while not stop.is_set():
                try:
                    rt.infer("mlp", "predict", [{"x": x}])
                except BaseException as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for t in threads:
            t.start()
        info = rt.update("mlp", version=2)
        stop.set()
        for t in threads:
            t.join(30)
        assert not failures
        assert info.version == 2 and info.workers[0].state == "ready"
        assert worker_pids(rt, "mlp") != old
        v2 = rt.infer("mlp", "predict", [{"x": x}])[0]["logits"]
        np.testing.assert_allclose(v2, run_net(exported["nets"]["mlp_v2"], x[None])[0], rtol=1e-5)
        assert not np.allclose(v1, v2)
        assert wait_for(lambda: not any(alive(p) for p in old))


# -- no orphans -----------------------------------------------------------------------------


def test_close_leaves_no_process_and_no_shared_memory(tmp_path):
    rt = mindserve.Runtime()
    svc = mindserve.Servable("s")
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=2)
    rt.infer("s", "run", [{"x": np.ones(1000, np.float32)}])
    pids = worker_pids(rt, "s")
    pool = pool_of(rt, "s")
    assert glob.glob(os.path.join(SHM_DIR, pool.prefix + "*"))
    rt.close()
    assert not any(alive(p) for p in pids)
    assert not glob.glob(os.path.join(SHM_DIR, pool.prefix + "*"))


def test_stop_ends_the_workers(rt):
    svc = mindserve.Servable("s")
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    rt.infer("s", "run", [{"x": np.ones(1000, np.float32)}])
    pids = worker_pids(rt, "s")
    pool = pool_of(rt, "s")
    rt.stop("s")
    assert wait_for(lambda: not any(alive(p) for p in pids))
    assert wait_for(lambda: not glob.glob(os.path.join(SHM_DIR, pool.prefix + "*")))


SCRIPT = """
import os, sys, time
import numpy as np
import mindserve

svc = mindserve.Servable("s")

def triple(x):
    return x * 3

model = svc.model(triple)
svc.add_method(lambda x: model(x), name="run")
rt = mindserve.Runtime()
rt.start(svc, workers=2)   # top level, no __main__ guard
out = rt.infer("s", "run", [{"x": np.ones(10000, np.float32)}])
assert out[0]["output"][0] == 3
print(" ".join(str(w.pid) for w in rt.servable_status("s").workers), flush=True)
if sys.argv[1] == "hang":
    time.sleep(600)
# "exit": leave without closing the runtime
"""


def run_script(tmp_path, mode):
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), mode], stdout=subprocess.PIPE, cwd=tmp_path, text=True
    )


def segments_of(pid):
    return glob.glob(os.path.join(SHM_DIR, f"{PREFIX}{pid}-*"))


def test_a_script_that_exits_without_closing_leaves_nothing(tmp_path):
    process = run_script(tmp_path, "exit")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    pids = [int(p) for p in out.split()]
    assert len(pids) == 2
    assert wait_for(lambda: not any(alive(p) for p in pids), 10)
    assert not segments_of(process.pid)


def test_workers_of_a_killed_main_process_exit_and_clean_up(tmp_path):
    process = run_script(tmp_path, "hang")
    pids = [int(p) for p in process.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    assert segments_of(process.pid)
    process.kill()
    process.wait()
    assert wait_for(lambda: not any(alive(p) for p in pids), 10)
    assert wait_for(lambda: not segments_of(process.pid), 10)


def test_workers_start_from_a_notebook_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    cells = [
        "import numpy as np, mindserve\nsvc = mindserve.Servable('nb')",
        textwrap.dedent(
            """
            factor = 5
            def scale(x):
                return x * factor
            model = svc.model(scale)

            @svc.stage(batch_size=4)
            def plus(xs):
                return [x + 1 for x in xs]

            svc.add_method(lambda x: plus(model(x)), name='run')
            """
        ),
        "rt = mindserve.Runtime()\nrt.start(svc, workers=1)\n"
        "print(rt.infer('nb', 'run', [{'x': np.float32(2)}])[0]['output'])\nrt.close()",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebooks.execute(notebook, tmp_path, timeout=120)
    outputs = notebook.cells[2].outputs
    assert outputs and outputs[0].get("text", "").strip() == "11.0", outputs


@pytest.mark.warm_up
def test_workers_warm_up_and_their_logs_and_reports_reach_the_main_process(exported, caplog):
    caplog.set_level(logging.INFO, logger="mindserve")
    observer = WarmUps()
    with mindserve.Runtime(observers=[observer]) as rt:
        rt.start(mlp_servable(os.path.join(exported["root"], "mlp")), version=1, workers=1)
        (pid,) = worker_pids(rt, "mlp")
        os.kill(pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the workers too: ignored
        assert rt.infer("mlp", "predict", [{"x": np.zeros(16, np.float32)}])[0]["logits"].shape == (10,)
        assert worker_pids(rt, "mlp") == [pid]
        (info,) = rt.status()
        assert info.models[0].warmed_up == (1, 2, 4, 8, 16, 32, 64)  # as the worker warmed up
        assert (
            info.models[0].graphs == 7
        )  # one per batch size warmed up; the call's batch of 1 is one of them
    (report,) = observer.reports
    assert report.model == "mlp" and [size for size, _ in report.compiled] == [1, 2, 4, 8, 16, 32, 64]
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("worker 0: servable 'mlp' version 1: model 'mlp' warmed up batch size 64")
        for m in messages
    )


def hangs_on_999(x):
    if (x == 999).any():
        time.sleep(3600)
    return x + 1


def test_a_hung_worker_is_stopped_once_every_caller_of_its_batch_gave_up(rt, monkeypatch):
    from mindserve._workers import pool

    monkeypatch.setattr(pool, "HUNG_AFTER", 1.0)
    svc = mindserve.Servable("hangs")
    model = svc.model(hangs_on_999)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    (pid,) = worker_pids(rt, "hangs")
    with pytest.raises(mindserve.DeadlineExceededError):
        rt.infer("hangs", "run", [{"x": np.float32(999)}], timeout=0.5)
    assert wait_for(lambda: rt.servable_status("hangs").workers[0].restarts == 1, 30)
    assert rt.infer("hangs", "run", [{"x": np.float32(1)}], timeout=30)[0]["output"] == 2
    (worker,) = rt.servable_status("hangs").workers
    assert worker.pid != pid and "SIGKILL" in worker.last_error


# -- defects found by attacking the first version ---------------------------------------------


def test_a_batched_stage_may_keep_its_inputs(rt):
    """Inputs reach a worker's stage as its own arrays, not views of reused shared memory."""
    svc = mindserve.Servable("keeps")
    kept = []

    @svc.stage(batch_size=4)
    def first_seen(xs):
        kept.extend(xs)
        return [kept[0] for _ in xs]

    svc.add_method(lambda x: first_seen(x), name="run")
    rt.start(svc, workers=1)
    a = rt.infer("keeps", "run", [{"x": np.arange(4, dtype=np.float32)}])[0]["output"]
    b = rt.infer("keeps", "run", [{"x": np.full(4, 9, np.float32)}])[0]["output"]
    assert a.tolist() == b.tolist() == [0, 1, 2, 3]


def _cannot_be_rebuilt():
    raise AttributeError("Can't get attribute 'Point' on <module '__main__'>")


class RebuiltNowhere:
    """A value that pickles but cannot be unpickled in another process (as a class of the
    caller's ``__main__`` pickled by name)."""

    def __reduce__(self):
        return (_cannot_be_rebuilt, ())


def test_a_value_a_worker_cannot_unpickle_fails_its_instance_not_the_worker(rt):
    svc = mindserve.Servable("unpicklable")

    @svc.stage
    def wrap(x):
        return RebuiltNowhere() if x == 1 else x

    @svc.stage(batch_size=4)
    def use(xs):
        return xs

    svc.add_method(lambda x: use(wrap(x)), name="run")
    rt.start(svc, workers=1)
    results = rt.infer("unpicklable", "run", [{"x": 0}, {"x": 1}], return_exceptions=True)
    assert results[0]["output"] == 0
    assert isinstance(results[1], mindserve.StageError)
    assert "Can't get attribute 'Point'" in str(results[1])
    assert rt.servable_status("unpicklable").workers[0].restarts == 0


def test_a_forked_child_leaves_its_parents_workers_alone(rt):
    from mindserve._workers import supervisor

    svc = mindserve.Servable("forked")
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    rt.infer("forked", "run", [{"x": np.ones(10, np.float32)}])
    pids = worker_pids(rt, "forked")
    prefix = pool_of(rt, "forked").prefix
    segments = glob.glob(os.path.join(SHM_DIR, prefix + "*"))
    child = os.fork()
    if child == 0:  # what the child's interpreter does at exit
        try:
            supervisor._close_all()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert worker_pids(rt, "forked") == pids and all(alive(p) for p in pids)
    assert glob.glob(os.path.join(SHM_DIR, prefix + "*")) == segments
    assert rt.infer("forked", "run", [{"x": np.ones(10, np.float32)}])[0]["output"][0] == 2
    assert rt.servable_status("forked").workers[0].restarts == 0


def test_a_hung_batch_is_not_run_again_for_calls_that_gave_up(rt, monkeypatch):
    from mindserve._workers import pool

    monkeypatch.setattr(pool, "HUNG_AFTER", 0.5)
    monkeypatch.setattr(pool, "_HUNG_POLL", 0.05)
    svc = mindserve.Servable("hangs")
    model = svc.model(hangs_on_999)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    started = time.monotonic()
    with pytest.raises(mindserve.DeadlineExceededError):
        rt.infer("hangs", "run", [{"x": np.float32(999)}] * 4, timeout=1)
    assert time.monotonic() - started < 5
    assert wait_for(lambda: rt.servable_status("hangs").workers[0].restarts == 1, 30)
    # No instance of the dead batch runs again and hangs the new worker: a batch sent again
    # ahead of this call (or in its batch) would hang it; one sent later would be found hung
    # and the worker restarted again within HUNG_AFTER + _HUNG_POLL (0.55 s): wait 3 times that.
    assert rt.infer("hangs", "run", [{"x": np.float32(1)}], timeout=30)[0]["output"] == 2
    time.sleep(3 * (0.5 + 0.05))
    assert rt.servable_status("hangs").workers[0].restarts == 1


class SlowToLoadWhenFlagged(DiesAtLoadWhenFlagged):
    """Loading waits while ``flag`` exists (up to a minute): the test removes it when done."""

    def __setstate__(self, state):
        self.__dict__.update(state)
        deadline = time.monotonic() + 60
        while os.path.exists(self.flag) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_a_call_waiting_for_a_restarting_worker_keeps_its_timeout(rt, tmp_path):
    flag = tmp_path / "slow"
    svc = mindserve.Servable("slow")
    model = svc.model(SlowToLoadWhenFlagged(str(flag)))
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    flag.touch()
    os.kill(worker_pids(rt, "slow")[0], signal.SIGKILL)
    assert wait_for(lambda: rt.servable_status("slow").workers[0].state == "restarting")
    started = time.monotonic()
    with pytest.raises(mindserve.DeadlineExceededError):
        rt.infer("slow", "run", [{"x": np.float32(1)}], timeout=1)
    assert time.monotonic() - started < 3
    assert rt.servable_status("slow").workers[0].state != "ready"  # still loading
    flag.unlink()
    assert wait_for(lambda: rt.servable_status("slow").workers[0].state == "ready", 30)
    assert rt.infer("slow", "run", [{"x": np.float32(1)}])[0]["output"] == 2


def test_a_worker_death_is_shown_and_its_restart_reported(rt, capsys, caplog, monkeypatch):
    """With no logging configured, the death reaches stderr; the restart's progress is
    logged at INFO for those who asked (docs/running.md#warnings)."""
    from mindserve._observe import visible

    monkeypatch.setattr(visible, "logging_configured", lambda logger: False)
    caplog.set_level(logging.INFO, logger="mindserve")
    svc = mindserve.Servable("dies")
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    victim = worker_pids(rt, "dies")[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: rt.servable_status("dies").workers[0].restarts == 1, 30)
    err = capsys.readouterr().err
    assert f"mindserve: warning: servable 'dies' version 1: worker 0 (pid {victim}) " in err
    assert "; restarting it" in err
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "servable 'dies' version 1: starting 1 worker process (each loads and warms up)" in messages
    assert any(
        m.startswith("servable 'dies' version 1: worker 0 ready after ") and "(1 of 1)" in m for m in messages
    )
    assert any("worker 0: restarting in " in m and "(attempt 1 of " in m for m in messages)
    assert any("worker 0 restarted: loaded and ready in " in m for m in messages)


def shout(x):
    print(f"worker {os.getpid()} saw {float(x[0])}", flush=True)
    return x * 2


def test_worker_output_goes_to_a_file_per_worker_kept_across_a_restart(rt, tmp_path):
    svc = mindserve.Servable("loud")
    model = svc.model(shout)
    svc.add_method(lambda x: model(x), name="run")
    pattern = str(tmp_path / "{servable}-v{version}-w{index}-d{device_id}.log")
    rt.start(svc, workers=1, worker_output=pattern)
    log = tmp_path / "loud-v1-w0-d0.log"
    rt.infer("loud", "run", [{"x": np.float32(3)}])
    first = worker_pids(rt, "loud")[0]
    assert wait_for(lambda: f"worker {first} saw 3.0" in log.read_text(), 30)
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: rt.servable_status("loud").workers[0].state == "ready", 30)
    rt.infer("loud", "run", [{"x": np.float32(4)}])
    second = worker_pids(rt, "loud")[0]
    assert wait_for(lambda: f"worker {second} saw 4.0" in log.read_text(), 30)
    assert f"worker {first} saw 3.0" in log.read_text()  # added to, not made anew


def test_a_worker_that_cannot_even_be_spawned_is_given_up(rt, monkeypatch):
    svc = mindserve.Servable("nospawn")
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # a venv replaced by a deploy
    os.kill(worker_pids(rt, "nospawn")[0], signal.SIGKILL)
    assert wait_for(lambda: rt.servable_status("nospawn").workers[0].state == "failed", 30)
    assert "/nonexistent/python" in rt.servable_status("nospawn").workers[0].last_error
    (result,) = rt.infer("nospawn", "run", [{"x": np.float32(1)}], return_exceptions=True, timeout=30)
    assert isinstance(result, mindserve.ModelError) and "no worker process is left" in str(result)


def test_shared_memory_shrinks_back_after_a_big_batch(rt):
    svc = mindserve.Servable("big")
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    rt.infer("big", "run", [{"x": np.ones(5_000_000, np.float32)}])  # 20 MB each way
    prefix = pool_of(rt, "big").prefix

    def held() -> int:
        return sum(os.path.getsize(p) for p in glob.glob(os.path.join(SHM_DIR, prefix + "*")))

    assert held() >= 40_000_000
    for _ in range(10):
        rt.infer("big", "run", [{"x": np.ones(10, np.float32)}])
    assert held() <= 4 << 20


SMALL_SHM_SCRIPT = """
import numpy as np, mindserve
svc = mindserve.Servable("s")
def double(x):
    return x * 2
model = svc.model(double)
svc.add_method(lambda x: model(x), name="run")
with mindserve.Runtime() as rt:
    rt.start(svc, workers=1)
    (result,) = rt.infer("s", "run", [{"x": np.ones(8_000_000, np.float32)}], return_exceptions=True)
    print(type(result).__name__, result)
    print(rt.infer("s", "run", [{"x": np.ones(4, np.float32)}])[0]["output"])
"""


def run_with_a_small_dev_shm(tmp_path, source):
    """Run ``source`` in a private mount namespace whose /dev/shm holds 16 MB (as Docker's
    64 MB, smaller); return the lines it printed."""
    script = tmp_path / "small_shm.py"
    script.write_text(source)
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -m) to mount a small /dev/shm")
    command = f"mount -t tmpfs -o size=16m tmpfs /dev/shm && {sys.executable} {script}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_a_batch_larger_than_dev_shm_fails_clearly_and_the_process_lives(tmp_path):
    """Docker gives containers a 64 MB /dev/shm; a bigger batch must not SIGBUS the caller."""
    lines = run_with_a_small_dev_shm(tmp_path, SMALL_SHM_SCRIPT)
    assert lines[0].startswith("ModelError") and "/dev/shm" in lines[0], lines
    assert lines[1] == "[2. 2. 2. 2.]"


def test_an_error_while_restarting_gives_the_worker_up_instead_of_leaving_it_restarting(rt, monkeypatch):
    from mindserve._workers.pool import WorkerPool

    def broken(self, slot):
        raise RuntimeError("an internal error")

    svc = mindserve.Servable("broken")
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="run")
    rt.start(svc, workers=1)
    monkeypatch.setattr(WorkerPool, "_restart", broken)
    os.kill(worker_pids(rt, "broken")[0], signal.SIGKILL)
    assert wait_for(lambda: rt.servable_status("broken").workers[0].state == "failed", 30)
    assert "an internal error" in rt.servable_status("broken").workers[0].last_error
    (result,) = rt.infer("broken", "run", [{"x": np.float32(1)}], return_exceptions=True, timeout=30)
    assert isinstance(result, mindserve.ModelError) and "no worker process is left" in str(result)


# -- nn.Cell models in workers ------------------------------------------------------------------


@pytest.mark.parametrize("network", ["layers", "lenet"])
def test_in_memory_cells_of_mindspores_own_layers_run_in_workers(rt, network):
    """Built-in layers hold primitives (Reshape, MatMul...) that do not pickle: they are
    rebuilt in the worker from their constructor arguments."""
    import mindspore as ms

    from models import LeNet

    ms.set_seed(3)
    net = (
        ms.nn.SequentialCell(ms.nn.Dense(16, 8), ms.nn.ReLU(), ms.nn.Dense(8, 4))
        if network == "layers"
        else LeNet()
    )
    shape = (16,) if network == "layers" else (1, 32, 32)
    svc = mindserve.Servable("cell")
    model = svc.model(net)
    svc.add_method(lambda x: model(x), name="run")
    rng = np.random.default_rng(5)
    instances = [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(5)]
    with mindserve.Runtime() as local:
        local.start(svc)
        here = local.infer("cell", "run", instances)
    rt.start(svc, workers=1)
    there = rt.infer("cell", "run", instances)
    for a, b in zip(here, there):
        assert np.array_equal(a["output"], b["output"])


def test_a_cell_that_cannot_be_sent_says_to_export_it(rt):
    import mindspore as ms

    class Tagged(ms.nn.Cell):
        def __init__(self):
            super().__init__()
            self.relu = ms.ops.ReLU()
            self.relu.add_prim_attr("tag", 1)  # set after construction: not rebuilt from arguments

        def construct(self, x):
            return self.relu(x)

    svc = mindserve.Servable("tagged")
    model = svc.model(Tagged())
    svc.add_method(lambda x: model(x), name="run")
    with pytest.raises(mindserve.LoadError, match=r"ReLU cannot be rebuilt.*export it with mindspore.export"):
        rt.start(svc, workers=1)


def test_padded_variable_length_inputs_batch_the_same_in_worker_processes(rt, text_models):
    """A Padding (with a filled-in attention mask) works the same when batches run in workers:
    instances of different lengths answered at their own length, the too-long one refused."""
    svc = mindserve.Servable("encoder", directory=os.path.join(text_models["root"], "encoder"))
    padding = mindserve.Padding(mask={1: 0}, outputs={0: 0}, buckets=[8, 16])
    encoder = svc.model("encoder.mindir", outputs=2, padding=padding)
    svc.add_method(lambda ids: encoder(ids), name="encode", outputs=["tokens", "pooled"])
    (model,) = rt.start(svc, workers=2).models
    assert model.lengths == (8, 16)
    rng = np.random.default_rng(7)
    xs = [rng.integers(1, 50, size=n).astype(np.int32) for n in (3, 9, 16, 17)]
    results = rt.infer("encoder", "encode", [{"ids": x} for x in xs], return_exceptions=True)
    assert isinstance(results[3], mindserve.InvalidInputError) and "longest accepted is 16" in str(results[3])
    for x, result in zip(xs[:3], results[:3]):
        tokens, pooled = run_net(text_models["nets"]["encoder"], x[None], np.ones((1, len(x)), np.float32))
        assert result["tokens"].shape == (len(x), 16)
        np.testing.assert_allclose(result["tokens"], tokens[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result["pooled"], pooled[0], rtol=1e-4, atol=1e-5)


def test_the_padding_probe_runs_in_the_workers_only_and_is_told_once(rt, text_models, caplog, monkeypatch):
    """No declaration: the load-time probe runs in each worker as it loads, and pads the
    per-token model (outputs sliced back) but not the mean-pool model (exact answers). Issue 18:
    the model is planned once, where it runs: the main process sends no probe batch (its queue
    runs with the workers' plan), and says what the probe found once (not once per worker):
    with logging not configured, the mean-pool warning is a Python warning at the user's line."""
    from mindserve._observe import visible

    monkeypatch.setattr(visible, "logging_configured", lambda logger: False)
    caplog.set_level(logging.INFO, logger="mindserve")

    def servable(name):
        svc = mindserve.Servable(name, directory=os.path.join(text_models["root"], name))
        model = svc.model(f"{name}.mindir")
        svc.add_method(lambda x: model(x), name="run", outputs="y")
        return svc

    cases = (
        ("per_token", True, "a load-time probe found it changes no output"),
        ("mean_pool", False, "padding changed output 0 in a load-time probe"),
    )
    for name, padded, said in cases:
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (info,) = rt.start(servable(name), workers=2).models
        assert (info.lengths is not None) == padded
        assert [slot.batches for slot in pool_of(rt, name)._slots] == [0, 0], "the main process probed again"
        assert info.graphs == 2  # the probe's unpadded and padded batches, run in each worker
        (told,) = [r.getMessage() for r in caplog.records if said in r.getMessage()]
        # the main process's own words, not a worker's record passed on ("worker 0: ...")
        assert told.startswith(f"servable '{name}' version 1: model '{name}': ")
        warned = [
            (said in str(w.message), w.filename) for w in caught if w.category is mindserve.MindServeWarning
        ]
        assert warned == ([] if padded else [(True, __file__)])
        xs = [np.random.default_rng(n).normal(size=(n, 8)).astype(np.float32) for n in (3, 6)]
        for x, result in zip(xs, rt.infer(name, "run", [{"x": x} for x in xs])):
            np.testing.assert_allclose(
                result["y"], run_net(text_models["nets"][name], x[None])[0], rtol=1e-5, atol=1e-6
            )


def test_a_model_that_never_batches_is_warned_of_once_not_by_each_worker(rt, tmp_path, caplog):
    """A MindIR model exported with a fixed batch size of 1: the main process's queue (which
    batches) warns once; the worker, whose model has no queue, says nothing of it."""
    from models import MLP, export, zeros

    export(MLP(seed=1), f"{tmp_path}/one/1/mlp.mindir", zeros(1, 16))
    caplog.set_level(logging.INFO, logger="mindserve")
    (model,) = rt.start(mlp_servable(f"{tmp_path}/one"), workers=1).models
    assert model.fixed_batch_size == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        "servable 'mlp' version 1: model 'mlp' was exported with a fixed batch size of 1"
    )


# -- shared memory another account holds (issue 20, items 1, 3 and 5) ------------------------


def doubling_servable(name):
    svc = mindserve.Servable(name)
    model = svc.model(double)
    svc.add_method(lambda x: model(x), name="run")
    return svc


def test_segment_names_hold_a_part_no_other_process_can_predict(rt):
    from mindserve._workers.transfer import owner_prefix

    rt.start(doubling_servable("a"), workers=1)
    rt.start(doubling_servable("b"), workers=1)
    prefixes = [pool_of(rt, name).prefix for name in ("a", "b")]
    for prefix in prefixes:
        assert prefix.startswith(owner_prefix())
        random_part = prefix[len(owner_prefix()) :].split("-")[0]
        assert len(random_part) == 16 and int(random_part, 16) >= 0
    assert prefixes[0].split("-")[3] != prefixes[1].split("-")[3]


def test_a_taken_segment_name_neither_wedges_nor_fails_the_worker(rt):
    """Names left by an earlier process that had the same pid (a container's pid 1), or made
    by another account: skipped on both sides, and left alone."""
    rt.start(doubling_servable("taken"), workers=1)
    slot = pool_of(rt, "taken")._slots[0]
    pid = worker_pids(rt, "taken")[0]
    taken = [
        os.path.join(SHM_DIR, f"{slot.prefix}{side}-{n}")
        for side in ("in", "out")
        for n in (1, 2, 3)
        if not os.path.exists(os.path.join(SHM_DIR, f"{slot.prefix}{side}-{n}"))
    ]
    for path in taken:
        with open(path, "wb") as handle:
            handle.write(b"theirs")
        os.chown(path, 65534, 65534)  # nobody's
    try:
        (result,) = rt.infer("taken", "run", [{"x": np.ones(1000, np.float32)}], timeout=30)
        np.testing.assert_array_equal(result["output"], np.full(1000, 2, np.float32))
        (worker,) = rt.servable_status("taken").workers
        assert (worker.state, worker.pid, worker.restarts) == ("ready", pid, 0)
        for path in taken:
            with open(path, "rb") as handle:
                assert handle.read() == b"theirs"
    finally:
        for path in taken:
            os.unlink(path)


def test_a_segment_that_cannot_be_created_fails_its_batch_and_the_worker_serves_on(rt, monkeypatch):
    from mindserve._workers import transfer

    rt.start(doubling_servable("refused"), workers=1)
    pid = worker_pids(rt, "refused")[0]
    real_open = os.open

    def refused(path, flags, *args):
        if flags & os.O_CREAT and os.fspath(path).startswith(SHM_DIR):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(transfer.os, "open", refused)
    (result,) = rt.infer(
        "refused", "run", [{"x": np.ones(10, np.float32)}], return_exceptions=True, timeout=30
    )
    assert isinstance(result, mindserve.ModelError), result
    assert isinstance(result.__cause__, mindserve.WorkerError)
    assert "cannot create a shared-memory segment" in str(result) and "Permission denied" in str(result)
    monkeypatch.setattr(transfer.os, "open", real_open)
    (worker,) = rt.servable_status("refused").workers
    assert (worker.state, worker.pid, worker.restarts) == ("ready", pid, 0)
    (result,) = rt.infer("refused", "run", [{"x": np.ones(10, np.float32)}], timeout=30)
    assert result["output"][0] == 2


@pytest.fixture
def theirs(monkeypatch):
    """Paths added to this set belong to another account: removing them raises PermissionError
    (the sticky /dev/shm; this test runs as root, whom chmod does not stop)."""
    from mindserve._workers import transfer

    paths: set[str] = set()
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fspath(path) in paths:
            raise PermissionError(1, "Operation not permitted", path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(transfer.os, "unlink", unlink)
    yield paths
    for path in paths:
        if os.path.exists(path):
            real_unlink(path)


def test_close_is_not_held_by_a_file_it_may_not_remove(theirs):
    rt = mindserve.Runtime()
    rt.start(doubling_servable("s"), workers=1)
    pids = worker_pids(rt, "s")
    path = os.path.join(SHM_DIR, pool_of(rt, "s").prefix + "theirs")
    open(path, "wb").close()
    theirs.add(path)
    closing = threading.Thread(target=lambda: rt.close(grace=None), daemon=True)
    closing.start()
    closing.join(60)  # a hang guard: it used to wait for ever
    assert not closing.is_alive(), "close(grace=None) never returned"
    assert not any(alive(p) for p in pids)
    assert os.path.exists(path), "another account's file stays"


def test_a_dead_processes_file_it_may_not_remove_does_not_fail_a_start(rt, theirs):
    from mindserve._workers.transfer import owner_prefix

    dead = 2**22 + 12345  # beyond the default pid_max: no such process
    path = os.path.join(SHM_DIR, owner_prefix(dead) + "theirs")
    open(path, "wb").close()
    theirs.add(path)
    rt.start(doubling_servable("s"), workers=1)
    assert rt.infer("s", "run", [{"x": np.float32(1)}])[0]["output"] == 2
    assert os.path.exists(path)


BIG_STAGE_RESULT_SCRIPT = """
import numpy as np, mindserve
svc = mindserve.Servable("s")

@svc.stage(batch_size=4)
def grow(xs):
    return [np.ones(int(n), np.float32) for n in xs]

svc.add_method(lambda n: grow(n), name="run")
with mindserve.Runtime() as rt:
    rt.start(svc, workers=1)
    pid = rt.servable_status("s").workers[0].pid
    (result,) = rt.infer("s", "run", [{"n": 8_000_000}], return_exceptions=True)
    print(type(result).__name__, type(result.__cause__).__name__, result)
    print(rt.infer("s", "run", [{"n": 4}])[0]["output"])
    (worker,) = rt.servable_status("s").workers
    print(worker.pid == pid, worker.restarts, worker.state)
"""


def test_a_batched_stages_result_larger_than_dev_shm_fails_its_instance_and_no_worker_dies(tmp_path):
    """Issue 20, item 5: it used to kill the worker (four deaths and reloads)."""
    lines = run_with_a_small_dev_shm(tmp_path, BIG_STAGE_RESULT_SCRIPT)
    assert lines[0].startswith("StageError WorkerError"), lines
    assert "shared memory has no room" in lines[0] and "/dev/shm" in lines[0], lines
    assert lines[1] == "[1. 1. 1. 1.]"
    assert lines[2] == "True 0 ready", lines

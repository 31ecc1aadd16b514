"""mindserve.ray on a local Ray instance: a servable from tests/helpers/ray_servables.py deployed on
Ray Serve with the MLP the tests export, called through mindserve.ray.Client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import socket
import threading

import numpy as np
import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is not installed; pip install 'mindserve[ray]' (the test extra installs it in CI)"
)
serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed; pip install 'mindserve[ray]'")

import mindserve  # noqa: E402
import mindserve.ray  # noqa: E402
import ray_servables  # noqa: E402
from mindserve import (  # noqa: E402
    ArgumentTypeError,
    DeadlineExceededError,
    DefinitionError,
    InferenceError,
    InvalidArgumentError,
    InvalidInputError,
    MethodNotFoundError,
    StageError,
    VersionNotFoundError,
    WorkerError,
)
from mindserve.ray._replica import build_servable  # noqa: E402
from paths import HELPERS  # noqa: E402
from ray_servables import instances  # noqa: E402
from waiting import wait_until  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.abspath(mindserve.__file__)))

#: A custom resource standing for accelerator cards: replicas ask for one each.
SLOTS = "accelerator_slot"


# -- without Ray -----------------------------------------------------------------------


def test_application_refuses_what_is_no_factory(exported):
    """application() refuses a servable object, a malformed import string, a non-callable,
    unknown Runtime options and a bad max_ongoing_requests, before Ray is involved."""
    svc = ray_servables.mlp(os.path.join(exported["root"], "mlp"))
    with pytest.raises(
        DefinitionError, match=r"takes a factory that returns the servable, not the servable 'mlp'"
    ):
        mindserve.ray.application(svc)
    with pytest.raises(DefinitionError, match=r"must be 'package.module:function'; got 'ray_servables.mlp'"):
        mindserve.ray.application("ray_servables.mlp")
    with pytest.raises(ArgumentTypeError, match="got int"):
        mindserve.ray.application(42)
    with pytest.raises(InvalidArgumentError, match=r"Runtime's arguments .*; got \['workers'\]"):
        mindserve.ray.application(ray_servables.mlp, runtime_options={"workers": 2})
    with pytest.raises(InvalidArgumentError, match="max_ongoing_requests must be an int >= 1; got 0"):
        mindserve.ray.application(ray_servables.mlp, max_ongoing_requests=0)
    with pytest.raises(VersionNotFoundError):
        mindserve.ray.application(ray_servables.mlp, version=-1)
    with pytest.raises(InvalidArgumentError, match=r"RestApp's arguments .*; got \['port'\]"):
        mindserve.ray.application(ray_servables.mlp, http={"port": 80})
    with pytest.raises(ArgumentTypeError, match="http must be True, False or a dict"):
        mindserve.ray.application(ray_servables.mlp, http="yes")


def test_factory_is_imported_called_and_checked(exported):
    """What a replica does with its factory: import 'module:function', call it, insist on a
    Servable, and name the factory in every failure."""
    directory = os.path.join(exported["root"], "mlp")
    svc = build_servable("ray_servables:mlp", (directory,))
    assert isinstance(svc, mindserve.Servable) and svc.name == "mlp"
    assert sorted(svc.methods) == ["checked", "gathered", "held", "predict", "tokens", "where"]
    with pytest.raises(DefinitionError, match=r"returned str, not a mindserve.Servable"):
        build_servable("ray_servables:not_a_servable")
    with pytest.raises(DefinitionError, match="'no_such_module:make' cannot be imported here"):
        build_servable("no_such_module:make")
    with pytest.raises(DefinitionError, match="module 'ray_servables' has no attribute 'nothing'"):
        build_servable("ray_servables:nothing")


def test_client_takes_a_handle():
    with pytest.raises(ArgumentTypeError, match=r"DeploymentHandle .*; got str"):
        mindserve.ray.Client("mlp")


# -- on Ray Serve ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs and 4 accelerator slots; replicas import mindserve
    and tests/helpers/ray_servables.py from this checkout."""
    path = os.pathsep.join(p for p in (SRC, HELPERS, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        resources={SLOTS: 4},
        include_dashboard=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": path, "MINDSERVE_PIN_WORKERS": "0", "MINDSERVE_WARM_UP": "0"}
        },
    )
    try:
        with socket.socket() as probe:  # a free port for Ray Serve's HTTP proxy
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


#: Ray Serve's defaults made short (the tests are not about them): a killed replica is found
#: by the next health check (every 10 s by default) and replaced; a replica being stopped looks
#: for ongoing requests every 2 s by default.
QUICK_RAY_SERVE = {"health_check_period_s": 1, "graceful_shutdown_wait_loop_s": 0.2}


def deploy(exported, name, *, version=1, hold_directory=None, **options):
    app = mindserve.ray.application(
        "ray_servables:mlp",
        factory_kwargs={"directory": os.path.join(exported["root"], "mlp"), "hold_directory": hold_directory},
        version=version,
        ray_actor_options={"num_cpus": 0.25, "resources": {SLOTS: 1}},
        **QUICK_RAY_SERVE,
        **options,
    )
    return serve.run(app, name=name, route_prefix=f"/{name}")


@pytest.fixture(scope="module")
def pair(local_ray, exported):
    """Version 1 of the MLP on two replicas."""
    return mindserve.ray.Client(deploy(exported, "pair", num_replicas=2))


@pytest.fixture(scope="module")
def single(local_ray, exported, tmp_path_factory):
    """Version 1 of the MLP on one replica, whose ``held`` method holds the first call to
    reach a replica while the hold directory is empty."""
    hold = tmp_path_factory.mktemp("hold")
    client = mindserve.ray.Client(deploy(exported, "single", num_replicas=1, hold_directory=str(hold)))
    return client, hold


@pytest.fixture(scope="module")
def local(exported):
    """The same servable in this process, the reference."""
    with mindserve.Runtime() as rt:
        rt.start(ray_servables.mlp(os.path.join(exported["root"], "mlp")), version=1)
        yield rt


def same_results(remote, here):
    assert len(remote) == len(here)
    for r, h in zip(remote, here):
        assert r.keys() == h.keys()
        for key in r:
            assert isinstance(r[key], np.ndarray) and r[key].dtype == h[key].dtype
            np.testing.assert_allclose(r[key], h[key], rtol=1e-5, atol=1e-6)


def test_a_factory_failing_in_the_replica_fails_the_deployment(local_ray):
    """A factory that returns no servable: the replica fails to start, serve.run raises, and
    the deployment's status carries mindserve's message."""
    app = mindserve.ray.application(
        "ray_servables:not_a_servable", max_constructor_retry_count=1, ray_actor_options={"num_cpus": 0.25}
    )
    try:
        with pytest.raises(RuntimeError, match="Deploying application broken failed"):
            serve.run(app, name="broken", route_prefix="/broken")
        status = serve.status().applications["broken"].deployments["mindserve"]
        assert "the servable factory 'ray_servables:not_a_servable' returned str" in status.message
    finally:
        serve.delete("broken")


def test_answers_equal_in_process_results(pair, local):
    """A call through the Client gives what the same call gives in-process: numpy arrays of
    the same dtype and values, in order; the replicas hold what was asked of Ray."""
    batch = instances(40, seed=1)
    same_results(pair.infer("predict", batch), local.infer("mlp", "predict", batch))
    status = pair.status()
    assert status.servable.name == "mlp" and status.servable.default_version == 1
    assert status.resources == {"CPU": 0.25, SLOTS: 1.0}
    assert status.actor_name.startswith("SERVE_REPLICA::pair#mindserve#")


def test_async_callers_get_their_own_results(pair, local):
    """64 concurrent ainfer calls from one event loop each get their own instance's result."""
    batch = instances(64, seed=2)

    async def call_all():
        return await asyncio.gather(*(pair.ainfer("predict", [one]) for one in batch))

    remote = [r[0] for r in asyncio.run(call_all())]
    same_results(remote, local.infer("mlp", "predict", batch))


def test_a_client_pickles_with_its_options(pair, local):
    """A Client passed to another process (a deployment's constructor) arrives as a working
    Client with the same handle options."""
    copy = pickle.loads(pickle.dumps(mindserve.ray.Client(pair.handle, retries=3, in_flight=2)))
    assert (copy.retries, copy.in_flight) == (3, 2)
    same_results(copy.infer("predict", instances(2)), local.infer("mlp", "predict", instances(2)))


def test_replica_batches_concurrent_calls(single, local):
    """Calls that reach one replica together share batches: 8 callers of one instance each,
    on a model that waits for 8 instances, run as one batch of 8."""
    client, _ = single
    batch = instances(8, seed=3)

    async def call_all():
        return await asyncio.gather(*(client.ainfer("gathered", [one]) for one in batch))

    remote = [r[0] for r in asyncio.run(call_all())]
    same_results(remote, local.infer("mlp", "predict", batch))
    gathering = client.status().metrics.model("mlp", "gathering")
    assert gathering.batch_sizes == {8: 1}


def test_the_replica_runs_per_instance_stages_off_its_event_loop(single):
    """A replica answers with ainfer, whose per-instance stages run on the runtime's pool:
    never in the thread of the replica's event loop."""
    client, _ = single
    results = client.infer("where", [{"x": np.zeros(16, np.float32)}] * 3)
    assert [float(r["on_loop"]) for r in results] == [0.0, 0.0, 0.0]


def test_a_padded_model_returns_each_instance_its_own_length(single):
    """Variable-length instances of one call share padded batches in the replica (lengths 3
    and 2 in the bucket 4, 5 and 7 in the bucket 8) and come back at their own length; too
    long an instance fails alone, naming the limit."""
    client, _ = single
    rng = np.random.default_rng(7)
    xs = [rng.normal(size=(n, 4)).astype(np.float32) for n in (3, 5, 7, 2)]
    before = client.status().metrics.model("mlp", "per_token")
    results = client.infer(
        "tokens", [{"x": x} for x in [*xs, np.ones((9, 4), np.float32)]], return_exceptions=True
    )
    for x, result in zip(xs, results):
        assert result["y"].shape == x.shape
        np.testing.assert_allclose(result["y"], 2 * x + 1, rtol=1e-6)
    assert isinstance(results[-1], InvalidInputError) and "the longest accepted is 8" in str(results[-1])
    after = client.status().metrics.model("mlp", "per_token")
    assert after.batch_sizes.get(2, 0) - before.batch_sizes.get(2, 0) == 2
    assert after.elements - before.elements == (3 + 5 + 7 + 2) * 4
    assert after.padded_elements - before.padded_elements == (2 * 4 + 2 * 8) * 4


def test_per_instance_errors_cross_with_their_classes(pair, local):
    """A failed instance arrives as the same InstanceError subclass with the same message
    and attributes, the replica's traceback as its cause; the others get their results."""
    batch = [
        {"x": -np.ones(16, np.float32)},
        {"x": np.ones(16, np.float32)},
        {"x": np.ones(3)},
    ]
    with pytest.raises(InferenceError) as remote:
        pair.infer("checked", batch)
    with pytest.raises(InferenceError) as here:
        local.infer("mlp", "checked", batch)
    assert str(remote.value) == str(here.value)
    assert sorted(remote.value.errors) == [0, 2]
    for index, expected in ((0, StageError), (2, InvalidInputError)):
        error, reference = remote.value.errors[index], here.value.errors[index]
        assert type(error) is expected and type(reference) is expected
        assert (error.servable, error.version, error.method, error.index, error.detail) == (
            "mlp",
            1,
            "checked",
            index,
            reference.detail,
        )
    assert "In the Ray Serve replica" in str(remote.value.errors[0].__cause__)
    assert "ValueError: the first value is negative (-1.0)" in str(remote.value.errors[0].__cause__)
    same_results([remote.value.results[1]], [here.value.results[1]])
    returned = pair.infer("checked", batch, return_exceptions=True)
    assert isinstance(returned[0], StageError) and isinstance(returned[2], InvalidInputError)


def test_whole_call_errors_cross_with_their_classes(pair, local):
    """Errors of a whole call are raised as the same classes, with the same messages."""
    cases = [
        (("nope", instances(1)), {}, MethodNotFoundError),
        (("predict", instances(1)), {"version": 7}, VersionNotFoundError),
        (("predict", {"x": np.ones(16, np.float32)}), {}, InvalidInputError),
    ]
    for args, options, expected in cases:
        with pytest.raises(expected) as remote:
            pair.infer(*args, **options)
        with pytest.raises(expected) as here:
            local.infer("mlp", *args, **options)
        assert type(remote.value) is type(here.value) and str(remote.value) == str(here.value)
    with pytest.raises(ArgumentTypeError, match="timeout must be a number of seconds or None"):
        pair.infer("predict", instances(1), timeout="1")


def test_http_ingress_speaks_mindspore_servings_protocol(local_ray, pair, local):
    """The application's HTTP ingress (through Ray Serve's proxy, under the route prefix)
    answers MindSpore Serving's RESTful requests: the same values as in-process, and a
    failed instance as its error_msg."""
    import httpx

    batch = instances(3, seed=6)
    body = {"instances": [{"x": one["x"].tolist()} for one in batch]}
    body["instances"][1]["x"][0] = -1.0
    reply = httpx.post(f"{local_ray}/pair/model/mlp/version/1:checked", content=json.dumps(body), timeout=60)
    assert reply.status_code == 200
    answers = reply.json()["instances"]
    here = local.infer("mlp", "checked", batch[::2])
    for answer, expected in zip((answers[0], answers[2]), here):
        np.testing.assert_allclose(np.array(answer["y"], np.float32), expected["y"], rtol=1e-5, atol=1e-6)
    assert "the first value is negative (-1.0)" in answers[1]["error_msg"]
    missing = httpx.post(f"{local_ray}/pair/model/mlp:nope", content=json.dumps(body), timeout=60)
    assert "nope" in missing.json()["error_msg"]


def test_timeout_raises_deadline_exceeded(single):
    """A call whose timeout passes first raises DeadlineExceededError; the replica's model,
    waiting for 8 instances, never ran its instance."""
    client, _ = single
    before = client.status().metrics.model("mlp", "gathering").instances
    with pytest.raises(DeadlineExceededError) as info:
        client.infer("gathered", instances(1), timeout=0.5)
    assert info.value.method == "gathered"
    with pytest.raises(DeadlineExceededError):
        asyncio.run(client.ainfer("gathered", instances(1), timeout=0.5))
    assert client.status().metrics.model("mlp", "gathering").instances == before


def kill_replica_under_a_call(client, hold, call):
    """Run ``call`` on a thread; once it is held in the replica, kill that replica's actor.
    Returns the call's outcome and the killed replica's status."""
    outcome = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    before = client.status()
    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: os.listdir(hold), timeout=60)
    assert os.listdir(hold) == [str(before.pid)]  # the call is held in the only replica
    ray.kill(ray.get_actor(before.actor_name, namespace="serve"))
    thread.join(120)
    assert not thread.is_alive()
    return outcome, before


def test_a_call_whose_replica_dies_is_sent_again(single, local, caplog):
    """Killing the replica under a call: Ray Serve starts another replica, the Client sends
    the call again (retries=1) and it succeeds there; the retry is logged. With retries=0
    the call fails with WorkerError caused by Ray's actor error."""
    client, hold = single
    batch = instances(2, seed=4)
    with caplog.at_level(logging.WARNING, logger="mindserve.ray"):
        outcome, killed = kill_replica_under_a_call(client, hold, lambda: client.infer("held", batch))
    assert "error" not in outcome, outcome
    same_results(outcome["result"], local.infer("mlp", "predict", batch))
    assert "died" in caplog.text and "sending it again" in caplog.text
    replacement = client.status()
    assert replacement.pid != killed.pid and replacement.replica_id != killed.replica_id

    for name in os.listdir(hold):  # hold the next call again
        os.remove(os.path.join(hold, name))
    once = mindserve.ray.Client(client.handle, retries=0)
    outcome, _ = kill_replica_under_a_call(once, hold, lambda: once.infer("held", batch))
    error = outcome.get("error")
    assert isinstance(error, WorkerError), outcome
    assert "died 1 time" in str(error) and "retries=0" in str(error)
    assert isinstance(error.__cause__, ray.exceptions.RayActorError)
    same_results(client.infer("predict", batch), local.infer("mlp", "predict", batch))  # serving again


def test_update_reaches_every_replica_without_failed_calls(pair, local, exported):
    """Running the application again at version 2 (a Ray Serve rolling update) under load
    from 8 async callers: no call fails, every answer is version 1's or version 2's, and once
    serve.run returns, every replica runs version 2 and answers with it."""
    batch = instances(4, seed=5)
    v1 = local.infer("mlp", "predict", batch)
    with mindserve.Runtime() as rt:
        rt.start(ray_servables.mlp(os.path.join(exported["root"], "mlp")), version=2)
        v2 = rt.infer("mlp", "predict", batch)
    old = {pair.status().replica_id for _ in range(6)}

    def which(results):
        for name, reference in (("v1", v1), ("v2", v2)):
            if all(np.allclose(r["y"], e["y"], rtol=1e-5, atol=1e-6) for r, e in zip(results, reference)):
                return name
        return "neither"

    async def load_while_updating():
        done = asyncio.Event()
        seen: list[str] = []
        failures: list[BaseException] = []

        async def caller():
            while not done.is_set():
                try:
                    seen.append(which(await pair.ainfer("predict", batch, timeout=120)))
                except Exception as exc:
                    failures.append(exc)

        callers = [asyncio.create_task(caller()) for _ in range(8)]
        await asyncio.to_thread(deploy, exported, "pair", version=2, num_replicas=2)
        done.set()
        await asyncio.gather(*callers)
        after = [which(await pair.ainfer("predict", batch)) for _ in range(20)]
        return seen, failures, after

    seen, failures, after = asyncio.run(load_while_updating())
    assert failures == []
    assert len(seen) > 0 and set(seen) <= {"v1", "v2"}, set(seen)
    assert set(after) == {"v2"}
    statuses = [pair.status() for _ in range(6)]
    assert {s.servable.default_version for s in statuses} == {2}
    assert not {s.replica_id for s in statuses} & old  # new replicas replaced the old ones
    state = serve.status().applications["pair"].deployments["mindserve"]
    assert state.replica_states == {"RUNNING": 2}

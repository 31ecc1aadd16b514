"""Variable-length inputs on real MindSpore: a small transformer encoder (attention mask filled
in by mindserve), a per-token model with no mask, and a mean-pool model that padding would
change (not padded by default). Each result equals the network run on that instance alone."""

import logging
import os
import random
import threading

import numpy as np
import pytest

import mindserve
from mindserve import Batching, Padding
from reference import run_net

VOCAB = 50  # TinyEncoder's vocabulary (models.VOCAB; imported lazily, with MindSpore)


def encoder_servable(root, padding=None, batching=None):
    svc = mindserve.Servable("encoder", directory=os.path.join(root, "encoder"))
    if padding is None:
        padding = Padding(mask={1: 0}, outputs={0: 0}, buckets=[8, 16, 32])
    encoder = svc.model("encoder.mindir", outputs=2, padding=padding, batching=batching)
    svc.add_method(lambda ids: encoder(ids), name="encode", outputs=["tokens", "pooled"])
    return svc


def one_model_servable(root, name, **options):
    svc = mindserve.Servable(name, directory=os.path.join(root, name))
    model = svc.model(f"{name}.mindir", **options)
    svc.add_method(lambda x: model(x), name="run", outputs="y")
    return svc


def model_info(rt, servable):
    (info,) = [s for s in rt.status() if s.name == servable]
    (model,) = info.models
    return model


def ids(length, seed):
    return np.random.default_rng(seed).integers(1, VOCAB, size=length).astype(np.int32)


#: Lengths of the randomized test: each bucket (8, 16, 32) full, one short, and just past the
#: bucket below.
LENGTHS = (1, 5, 7, 8, 9, 15, 16, 17, 31, 32)


def alone(net, *arrays):
    """The network on one instance, unpadded."""
    return run_net(net, *(a[None] for a in arrays))


@pytest.mark.warm_up
def test_encoder_batches_across_lengths_with_no_compile_after_warm_up(rt, text_models, caplog):
    """Randomized: 6 threads, random lengths in 1..32 (drawn from lengths on both sides of
    each bucket's edge); each result equals the encoder run on the instances of its length,
    unpadded; the warm-up compiled the grid and serving compiled nothing more."""
    caplog.set_level(logging.INFO, logger="mindserve")
    svc = encoder_servable(text_models["root"], batching=Batching(buckets=[1, 2, 4, 8]))
    (model,) = rt.start(svc).models
    assert model.lengths == (8, 16, 32)
    assert model.graphs == 12  # 4 batch sizes x 3 lengths
    assert any("warmed up 12 graphs (4 batch sizes x 3 lengths)" in r.getMessage() for r in caplog.records)
    net = text_models["nets"]["encoder"]
    results, failures = {}, []

    def caller(k):
        rng = random.Random(k)
        try:
            for n in range(6):
                batch = [ids(rng.choice(LENGTHS), k * 1000 + n * 10 + i) for i in range(rng.randint(1, 3))]
                answers = rt.infer("encoder", "encode", [{"ids": x} for x in batch])
                results.update({(k, n, i): (x, a) for i, (x, a) in enumerate(zip(batch, answers))})
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    by_length = {}
    for x, answer in results.values():
        by_length.setdefault(len(x), []).append((x, answer))
    for length, pairs in by_length.items():
        # the encoder on these instances, unpadded: one call per length (a call costs 0.15 s)
        xs = np.stack([x for x, _ in pairs])
        tokens, pooled = run_net(net, xs, np.ones(xs.shape, np.float32))
        for (_, answer), row_tokens, row_pooled in zip(pairs, tokens, pooled):
            assert answer["tokens"].shape == (length, 16)
            np.testing.assert_allclose(answer["tokens"], row_tokens, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(answer["pooled"], row_pooled, rtol=1e-4, atol=1e-5)
    after = model_info(rt, "encoder")
    assert after.graphs == 12, "a request paid a compile after the warm-up"
    assert after.mean_batch_size > 1


def test_a_too_long_instance_fails_alone_among_good_ones(rt, text_models):
    rt.start(encoder_servable(text_models["root"]))
    good, long = ids(20, 1), ids(33, 2)
    results = rt.infer(
        "encoder", "encode", [{"ids": good}, {"ids": long}, {"ids": good[:3]}], return_exceptions=True
    )
    assert isinstance(results[1], mindserve.InvalidInputError)
    assert "length 33 along axis 0; the longest accepted is 32" in str(results[1])
    net = text_models["nets"]["encoder"]
    for x, answer in ((good, results[0]), (good[:3], results[2])):
        np.testing.assert_allclose(
            answer["pooled"], alone(net, x, np.ones(len(x), np.float32))[1][0], rtol=1e-4, atol=1e-5
        )


def test_per_token_model_without_mask_is_padded_after_the_probe(rt, text_models, caplog):
    """No declaration: the load-time probe finds padding changes no answer, and the output
    that follows the length is found and sliced back."""
    caplog.set_level(logging.INFO, logger="mindserve")
    (model,) = rt.start(one_model_servable(text_models["root"], "per_token")).models
    assert model.lengths == (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
    assert any("a load-time probe found it changes no output" in r.getMessage() for r in caplog.records)
    net = text_models["nets"]["per_token"]
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 7, 5, 100)]
    for x, result in zip(xs, rt.infer("per_token", "run", [{"x": x} for x in xs])):
        assert result["y"].shape == (len(x), 4)
        np.testing.assert_allclose(result["y"], alone(net, x)[0], rtol=1e-5, atol=1e-6)
    info = model_info(rt, "per_token")
    # the probe's two batches of 4 (lengths 5 and 8); lengths 3, 7 and 5 run as that padded
    # batch of 4 at 8 again; 100 runs at 128
    assert info.graphs == 3


def test_mean_pool_without_mask_is_not_padded_and_stays_exact(rt, text_models, caplog):
    caplog.set_level(logging.INFO, logger="mindserve")
    (model,) = rt.start(one_model_servable(text_models["root"], "mean_pool")).models
    assert model.lengths is None
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "padding changed output 0 in a load-time probe" in warning
    assert "compiles its own graph" in warning and "Padding(mask=" in warning
    net = text_models["nets"]["mean_pool"]
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 7, 600)]
    for x, result in zip(xs, rt.infer("mean_pool", "run", [{"x": x} for x in xs])):
        np.testing.assert_allclose(result["y"], alone(net, x)[0], rtol=1e-5, atol=1e-6)


def test_the_probe_warning_is_a_python_warning_without_logging_configured(rt, text_models, monkeypatch):
    from mindserve._observe import visible

    monkeypatch.setattr(visible, "logging_configured", lambda logger: False)
    with pytest.warns(
        mindserve.MindServeWarning, match="padding changed output 0 in a load-time probe"
    ) as caught:
        rt.start(one_model_servable(text_models["root"], "mean_pool"))
    assert [w.filename for w in caught] == [__file__]


def test_padding_can_be_turned_off(rt, text_models, caplog):
    caplog.set_level(logging.INFO, logger="mindserve")
    svc = one_model_servable(text_models["root"], "per_token", padding=Padding(enabled=False))
    (model,) = rt.start(svc).models
    assert model.lengths is None and model.graphs == 0  # no probe ran
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.warm_up
def test_a_compile_after_the_warm_up_is_logged_once_per_shape(rt, text_models, caplog):
    """Exact shapes (padding off): each new length compiles a graph after the warm-up; the
    load log cannot have compiled it, so serving logs it, once per shape."""
    caplog.set_level(logging.INFO, logger="mindserve")
    svc = one_model_servable(text_models["root"], "per_token", padding=Padding(enabled=False))
    rt.start(svc)
    for length in (5, 5, 6):
        rt.infer("per_token", "run", [{"x": np.ones((length, 8), np.float32)}])
    logged = [
        r.getMessage() for r in caplog.records if "compiled a graph for new input shapes" in r.getMessage()
    ]
    assert len(logged) == 2
    assert "model 'per_token'" in logged[0] and "(1, 5, 8)" in logged[0] and "(1 graph now)" in logged[0]
    assert "(1, 6, 8)" in logged[1] and "(2 graphs now)" in logged[1]


def test_a_declaration_that_does_not_fit_the_file_is_named(rt, text_models):
    svc = one_model_servable(text_models["root"], "per_token", padding=Padding(inputs={0: 1}))
    with pytest.raises(mindserve.LoadError, match=r"pads input 0 along axis 1, but .* \(it is fixed at 8\)"):
        rt.start(svc)


def test_a_filled_input_of_the_wrong_rank_is_named(rt, text_models):
    svc = encoder_servable(text_models["root"], padding=Padding(lengths={1: 0}))
    with pytest.raises(
        mindserve.LoadError, match=r"fills input 1 as a lengths of shape \(batch,\), but the model"
    ):
        rt.start(svc)

"""Tests of examples/sentiment.py's pipeline, with its model replaced: no model file and no
MindSpore needed. Run with ``pytest examples/test_sentiment.py`` (mindserve's pytest plugin
gives the ``mindserve_runtime`` fixture)."""

import numpy as np
import pytest
from sentiment import VOCABULARY, svc

import mindserve
from mindserve.testing import assert_instance_errors, raises_instance_errors, replace_models


def fake_classifier(ids):
    """Logits from word counts: 'good' and 'great' vote positive, 'bad' and 'awful' negative.
    ``ids`` is a batch: one row of word ids per instance."""
    positive = np.isin(ids, [VOCABULARY["good"], VOCABULARY["great"]]).sum(axis=1)
    negative = np.isin(ids, [VOCABULARY["bad"], VOCABULARY["awful"]]).sum(axis=1)
    return np.stack([negative, positive], axis=1).astype(np.float32)


@pytest.fixture
def rt(mindserve_runtime):
    """The runtime with the servable started, its classifier replaced."""
    mindserve_runtime.start(replace_models(svc, {"classifier": fake_classifier}))
    return mindserve_runtime


def test_labels_follow_the_classifier(rt):
    results = rt.infer("sentiment", "classify", [{"text": "a good film"}, {"text": "awful, just bad"}])
    assert [r["label"] for r in results] == ["positive", "negative"]
    assert results[0]["score"] == pytest.approx(np.e / (1 + np.e))


def test_a_fixed_output_serves_every_instance(mindserve_runtime):
    logits = np.array([0.0, 5.0], np.float32)  # one instance's output; repeated per instance
    mindserve_runtime.start(replace_models(svc, {"classifier": logits}))
    results = mindserve_runtime.infer("sentiment", "classify", [{"text": "bad"}, {"text": "awful"}])
    assert [r["label"] for r in results] == ["positive", "positive"]


def test_a_bad_instance_fails_alone(rt):
    instances = [{"text": "good"}, {"text": 42}, {"txt": "good"}]
    results = rt.infer("sentiment", "classify", instances, return_exceptions=True)
    errors = assert_instance_errors(
        results, {1: (mindserve.StageError, "must be a str"), 2: mindserve.InvalidInputError}
    )
    assert errors[1].__cause__.__class__ is TypeError
    assert results[0]["label"] == "positive"


def test_the_same_with_a_context_manager(rt):
    with raises_instance_errors({0: mindserve.StageError}) as caught:
        rt.infer("sentiment", "classify", [{"text": 3.5}, {"text": "great"}])
    assert caught.results[1]["label"] == "positive"


def test_batches_are_formed_by_rule(mindserve_runtime):
    """In the deterministic runtime, a call's instances form batches of up to max_batch_size
    (4 here), in order; calls never share a batch."""
    sizes = []

    def recording(ids):
        sizes.append(len(ids))
        return fake_classifier(ids)

    mindserve_runtime.start(replace_models(svc, {"classifier": recording}))
    mindserve_runtime.infer("sentiment", "classify", [{"text": "good"}] * 6)
    mindserve_runtime.infer("sentiment", "classify", [{"text": "bad"}] * 3)
    assert sizes == [4, 2, 3]

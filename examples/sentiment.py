"""A servable as an application defines it: text in, a label out, a MindIR model between.

examples/test_sentiment.py tests it with mindserve.testing, without the model file and
without MindSpore. See docs/testing.md.
"""

import os

import numpy as np

import mindserve

VOCABULARY = {"good": 1, "great": 2, "bad": 3, "awful": 4}
LENGTH = 8
LABELS = ("negative", "positive")

svc = mindserve.Servable(
    "sentiment", directory=os.path.join(os.path.dirname(__file__), "models", "sentiment")
)
classifier = svc.model("classifier.mindir", batching=mindserve.Batching(max_batch_size=4))


@svc.stage
def tokenize(text):
    """Word ids, padded to LENGTH (0: unknown or padding)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    ids = [VOCABULARY.get(word, 0) for word in text.lower().split()][:LENGTH]
    return np.array(ids + [0] * (LENGTH - len(ids)), np.int32)


@svc.stage
def decide(logits) -> tuple[str, float]:
    """The label and its probability."""
    shifted = np.exp(logits - logits.max())
    probabilities = shifted / shifted.sum()
    best = int(np.argmax(probabilities))
    return LABELS[best], float(probabilities[best])


@svc.method(outputs=["label", "score"])
def classify(text):
    return decide(classifier(tokenize(text)))

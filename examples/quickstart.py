"""mindserve quickstart: export a small model, serve it in-process, call it.

Run:  python examples/quickstart.py

1. Export a small MindSpore classifier to MindIR in a version directory (rows/1/).
2. Define a servable: a preprocessing stage, the model, a batched postprocessing stage.
3. Start it in a Runtime (CPU here; Ascend when the machine has one) and call it.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

import mindserve


def export_model(directory: str) -> None:
    """Export a tiny "which row is brightest?" classifier for 8x8 images, as version 1.

    A Dense layer whose weights sum each row of the image: logit k is the brightness
    of row k, so the label is the brightest row (easy to check by eye).
    """
    import mindspore as ms
    from mindspore import nn

    weights = np.zeros((8, 64), np.float32)
    for row in range(8):
        weights[row, row * 8 : row * 8 + 8] = 1.0
    net = nn.Dense(64, 8, weight_init=ms.Tensor(weights), bias_init="zeros")
    os.makedirs(os.path.join(directory, "1"), exist_ok=True)
    # shape=[None, 64]: the exported model accepts any batch size.
    example = ms.Tensor(shape=[None, 64], dtype=ms.float32)
    ms.export(net, example, file_name=os.path.join(directory, "1", "rows"), file_format="MINDIR")


def define_servable(directory: str) -> mindserve.Servable:
    svc = mindserve.Servable("rows", directory=directory)
    rows = svc.model("rows.mindir", with_batch_dim=True)

    @svc.stage
    def normalize(image):
        """One 8x8 uint8 image -> a flat float32 vector in [0, 1]."""
        return (image.reshape(64) / 255.0).astype("float32")

    @svc.stage(batch_size=8, outputs=2)
    def top1(logits_list):
        """Batched: a list of logits -> (label, probability) per instance."""
        results = []
        for logits in logits_list:
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            results.append((int(probs.argmax()), float(probs.max())))
        return results

    @svc.method(outputs=["label", "probability"])
    def classify(image):
        return top1(rows(normalize(image)))

    return svc


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mindserve-quickstart-") as root:  # removed at the end
        serve(root)


def serve(root: str) -> None:
    """Export the model under ``root``, serve it, print what it answers."""
    directory = os.path.join(root, "rows")
    export_model(directory)
    svc = define_servable(directory)

    rng = np.random.default_rng(0)
    bright_rows = [3, 0, 7, 5, 1]
    images = []
    for row in bright_rows:
        image = rng.integers(0, 100, (8, 8), dtype=np.uint8)
        image[row] = 255
        images.append(image)

    with mindserve.Runtime() as rt:
        info = rt.start(svc, version=0)  # 0 = the newest version directory
        print(f"serving {info.name} version {info.version} on {info.device}")
        results = rt.infer("rows", "classify", [{"image": image} for image in images])
        for row, result in zip(bright_rows, results):
            print(f"bright row {row}: label {result['label']} (p={result['probability']:.3f})")

        # A bad instance fails alone; the others still get their results.
        mixed = [{"image": images[0]}, {"image": np.zeros((4, 4), np.uint8)}]
        outcomes = rt.infer("rows", "classify", mixed, return_exceptions=True)
        print(f"good instance: label {outcomes[0]['label']}")
        print(f"bad instance: {outcomes[1]}")


if __name__ == "__main__":
    main()

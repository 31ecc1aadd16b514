"""Serve one servable in two worker processes, defined right here in the script.

    python examples/workers.py

A CPU-heavy Python preprocess (it holds the GIL, so in one process it uses one core) feeds a
small MLP exported to MindIR. The same calls run in-process, then in two workers; the
results are the same, and the workers' status shows who ran what.
"""

import os
import shutil
import tempfile
import threading
import time

import mindspore as ms
import numpy as np

import mindserve

root = tempfile.mkdtemp(prefix="mindserve-workers-")
os.makedirs(f"{root}/scorer/1")
ms.set_seed(0)
ms.export(
    ms.nn.Dense(32, 4),
    ms.Tensor(shape=[None, 32], dtype=ms.float32),
    file_name=f"{root}/scorer/1/scorer",
    file_format="MINDIR",
)

svc = mindserve.Servable("scorer", directory=f"{root}/scorer")
scorer = svc.model("scorer.mindir")


@svc.stage(batch_size=16)  # batched stages run in the workers
def features(texts):
    """A deliberately slow, pure-Python feature extractor: 32 character-bigram buckets."""
    rows = []
    for text in texts:
        counts = [0.0] * 32
        for _ in range(200):  # pretend this is real work
            for a, b in zip(text, text[1:]):
                counts[(ord(a) * 31 + ord(b)) % 32] += 1.0
        rows.append(np.array(counts, np.float32) / (200 * max(len(text) - 1, 1)))
    return rows


@svc.method(outputs=["scores"])
def score(text):
    return scorer(features(text))


texts = [f"request number {i}: the quick brown fox jumps over the lazy dog" for i in range(256)]


def run(rt: mindserve.Runtime) -> tuple[list, float]:
    """Call from 16 threads, 16 texts each; return the results in order and the seconds."""
    results: list = [None] * len(texts)

    def caller(k: int) -> None:
        chunk = list(range(k, len(texts), 16))
        for i, out in zip(chunk, rt.infer("scorer", "score", [{"text": texts[i]} for i in chunk])):
            results[i] = out["scores"]

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(16)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


with mindserve.Runtime() as rt:
    rt.start(svc)
    here, seconds_here = run(rt)

with mindserve.Runtime() as rt:
    rt.start(svc, workers=2)  # no `if __name__ == "__main__":` needed
    there, seconds_there = run(rt)
    for worker in rt.servable_status("scorer").workers:
        print(f"worker {worker.index}: pid {worker.pid}, {worker.state}, {worker.batches} batches")

print("same results:", all(np.array_equal(a, b) for a, b in zip(here, there)))
print(f"in-process {seconds_here:.2f} s, two workers {seconds_there:.2f} s")
shutil.rmtree(root)  # the exported model

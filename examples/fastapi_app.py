"""A MindSpore model behind FastAPI with mindserve: the recipe (docs/http.md, docs/running.md).

    pip install 'mindserve[http,prometheus]' fastapi python-multipart
    cd examples
    uvicorn fastapi_app:app --port 8000               # one process
    uvicorn fastapi_app:app --port 8000 --workers 4   # four processes, each with its own runtime
    gunicorn fastapi_app:app -k uvicorn.workers.UvicornWorker -w 4 --bind :8000   # the same

    curl -s localhost:8000/classify -H 'content-type: application/json' -d '{"pixels": [0.5, ...64 numbers]}'
    curl -s localhost:8000/classify/upload -F image=@digit.raw    # 64 bytes of 8-bit gray
    curl -s localhost:8000/serving/model/digits:classify -d '{"instances": [{"image": {"b64": "..."}}]}'
    curl -s localhost:8000/metrics

What it shows:

* the runtime is made and started in the app's lifespan, so in the process that serves
  (after uvicorn's or gunicorn's fork: a runtime does not survive a fork), and closed with
  ``await rt.aclose()`` at shutdown, letting the calls in flight finish;
* ``await rt.ainfer(...)`` in ``async`` endpoints: the requests of all callers are batched
  together on the model, and the event loop never waits for it;
* a file upload decoded by a stage that raises :class:`mindserve.InvalidInputError` for a
  bad file, which the app answers with a 400;
* mindserve's errors as HTTP statuses (``http_error``);
* MindSpore Serving's RESTful protocol mounted at ``/serving`` (:class:`mindserve.http.RestApp`),
  and the metrics at ``/metrics`` when ``mindserve[prometheus]`` is installed.

The model is a small MLP over 8x8 gray images, exported to a temporary directory when the
module is imported (set ``DIGITS_MODELS`` to a directory holding ``digits/1/digits.mindir`` to
use yours).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np
from fastapi import FastAPI, HTTPException, UploadFile
from pydantic import BaseModel

import mindserve
from mindserve.http import RestApp

SIDE = 8
PIXELS = SIDE * SIDE


def export_demo_model() -> str:
    """A directory holding digits/1/digits.mindir: an MLP from 64 pixels to 10 classes."""
    import mindspore as ms

    root = tempfile.mkdtemp(prefix="mindserve-fastapi-")
    os.makedirs(f"{root}/digits/1")
    ms.set_seed(0)
    net = ms.nn.SequentialCell(ms.nn.Dense(PIXELS, 32), ms.nn.ReLU(), ms.nn.Dense(32, 10))
    shape = ms.Tensor(shape=[None, PIXELS], dtype=ms.float32)
    ms.export(net, shape, file_name=f"{root}/digits/1/digits", file_format="MINDIR")
    return root


def define(root: str) -> mindserve.Servable:
    svc = mindserve.Servable("digits", directory=f"{root}/digits")
    net = svc.model("digits.mindir")

    @svc.stage
    def decode(image):
        """Raw 8-bit gray pixels to floats in [0, 1]; a wrong file is the client's error."""
        if not isinstance(image, bytes) or len(image) != PIXELS:
            got = f"{len(image)} bytes" if isinstance(image, bytes) else type(image).__name__
            raise mindserve.InvalidInputError(f"an image is {PIXELS} bytes of 8-bit gray; got {got}")
        return np.frombuffer(image, np.uint8).astype(np.float32) / 255

    @svc.stage
    def top(logits):
        return int(logits.argmax())

    @svc.method(outputs=["label", "logits"])
    def classify(image):
        logits = net(decode(image))
        return top(logits), logits

    @svc.method(outputs=["label", "logits"])
    def classify_pixels(pixels):
        logits = net(pixels)
        return top(logits), logits

    return svc


MODELS = os.environ.get("DIGITS_MODELS")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    root = MODELS or export_demo_model()
    rt = mindserve.Runtime()  # here, in the serving process: after any fork
    try:
        rt.start(define(root))
        app.state.rt = rt
        app.mount("/serving", RestApp(rt, http_status=True))  # MindSpore Serving's protocol
        with contextlib.suppress(ImportError):  # the mindserve[prometheus] extra
            import prometheus_client

            from mindserve.prometheus import register

            registry = prometheus_client.CollectorRegistry()
            register(rt, registry)
            app.mount("/metrics", prometheus_client.make_asgi_app(registry))
        yield
    finally:
        await rt.aclose()  # the calls in flight finish first
        if not MODELS:
            shutil.rmtree(root, ignore_errors=True)


app = FastAPI(title="digits", lifespan=lifespan)


def http_error(exc: mindserve.MindServeError) -> HTTPException:
    """A mindserve error as the HTTP error a client should see."""
    if isinstance(exc, mindserve.InferenceError):  # one instance per request here: its error
        (exc,) = exc.errors.values()
    if isinstance(exc, mindserve.InvalidInputError) or isinstance(exc.__cause__, mindserve.InvalidInputError):
        detail = str(exc.__cause__ if isinstance(exc.__cause__, mindserve.InvalidInputError) else exc)
        return HTTPException(400, detail=detail)
    if isinstance(exc, mindserve.NotFoundError):
        return HTTPException(404, detail=str(exc))
    if isinstance(exc, (mindserve.OverloadedError, mindserve.RuntimeClosedError)):
        return HTTPException(503, detail=str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, mindserve.DeadlineExceededError):
        return HTTPException(504, detail=str(exc))
    return HTTPException(500, detail="the model failed on this request")  # details in the server's log


async def classify(method: str, instance: dict) -> dict:
    try:
        (result,) = await app.state.rt.ainfer("digits", method, [instance], timeout=10.0)
    except mindserve.MindServeError as exc:
        raise http_error(exc) from exc
    return {"label": result["label"], "logits": result["logits"].tolist(), "pid": os.getpid()}


class Pixels(BaseModel):
    pixels: list[float]


@app.post("/classify")
async def classify_json(body: Pixels) -> dict:
    return await classify("classify_pixels", {"pixels": np.asarray(body.pixels, np.float32)})


@app.post("/classify/upload")
async def classify_upload(image: UploadFile) -> dict:
    data = await image.read(PIXELS + 1)  # never more than one byte past what a good file holds
    return await classify("classify", {"image": data})


@app.get("/health")
async def health() -> dict:
    return {"ok": True, "pid": os.getpid()}

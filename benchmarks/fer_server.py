"""`fer` behind the same kind of server as `facexpr serve`, for benchmarks/api_load.py only.

FastAPI + uvicorn, one endpoint: the uploaded photo decoded by OpenCV and passed to
`FER(mtcnn=False).detect_emotions` (its default Haar cascade + TFLite mini-Xception), one call
per photo, as a fer user would serve it. Nothing is recorded or kept.
"""

from __future__ import annotations

import os
import queue
from typing import Annotated, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from fastapi import FastAPI, File, HTTPException, UploadFile  # noqa: E402
from fer.fer import FER  # noqa: E402

app = FastAPI(title="fer (benchmark)")
# Its TFLite interpreter is not thread-safe: one detector per core, each used by one request at a time.
_IDLE: queue.Queue[Any] = queue.Queue()
for _ in range(os.cpu_count() or 1):
    _IDLE.put(FER(mtcnn=False))


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/predictions")
def predictions(file: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
    out = []
    for upload in file:
        image = cv2.imdecode(np.frombuffer(upload.file.read(), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise HTTPException(422, "not an image")
        detector = _IDLE.get()
        try:
            faces = detector.detect_emotions(image)
        finally:
            _IDLE.put(detector)
        out.append({"faces": [{"box": [int(v) for v in f["box"]],
                               "probabilities": {k: float(v) for k, v in f["emotions"].items()}}
                              for f in faces]})
    return {"predictions": out}

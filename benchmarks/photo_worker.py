"""One library answering photos in its own process, driven by benchmarks/run.py.

    python benchmarks/photo_worker.py {facexpr|facexpr-before|fer} --serve PATHS_FILE [MODEL]
    python benchmarks/photo_worker.py fer --once PHOTO…                  # fer's whole-process run

Each library keeps its own settings (facexpr runs OpenCV on one thread per request; fer keeps
OpenCV's default of all cores), which sharing one process would not allow. Both answer from the
photo's bytes in memory: decode, find the faces, classify. Results are JSON lines prefixed with
MARK on stdout; logs go to stderr.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
MARK = "@@bench "
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def emit(obj: dict) -> None:
    print(MARK + json.dumps(obj), flush=True)


class FacexprRunner:
    def __init__(self, model: str | None) -> None:
        from facexpr.model.classifier import load_classifier
        from facexpr.model.predict import predict_image

        self.classifier = load_classifier(model)
        self._predict = predict_image

    def answer(self, data: bytes) -> tuple[str | None, int, dict[str, float]]:
        p = self._predict(data, self.classifier)
        return (p.faces[0].expression if p.faces else None), len(p.faces), p.latency_ms

    def model_call(self, n: int) -> float:
        import numpy as np

        crops = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
        times = []
        for i in range(n):
            t = time.perf_counter()
            self.classifier.predict(crops[i % 16][None])
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000


class FacexprBeforeRunner(FacexprRunner):
    """facexpr before the aligned crop (issue 21): the same model, served the Haar box crop."""

    def __init__(self, model: str | None) -> None:
        import dataclasses

        from facexpr.photo.geometry import HAAR_BOX

        super().__init__(model)
        self.classifier.card = dataclasses.replace(self.classifier.card, crop=HAAR_BOX)


class FerRunner:
    def __init__(self) -> None:
        import warnings

        warnings.filterwarnings("ignore")
        import cv2
        import numpy as np
        from fer.fer import FER

        self.detector = FER(mtcnn=False)  # its default: Haar cascade + quantized TFLite mini-Xception
        self._cv2, self._np = cv2, np

    def answer(self, data: bytes) -> tuple[str | None, int, dict[str, float]]:
        image = self._cv2.imdecode(self._np.frombuffer(data, self._np.uint8), self._cv2.IMREAD_COLOR)
        faces = self.detector.detect_emotions(image)
        if not faces:
            return None, 0, {}
        largest = max(faces, key=lambda f: int(f["box"][2]) * int(f["box"][3]))
        emotions = largest["emotions"]
        return max(emotions, key=emotions.get), len(faces), {}

    def model_call(self, n: int) -> float:
        np = self._np
        faces = np.random.default_rng(0).uniform(-1, 1, (16, 64, 64)).astype(np.float32)
        classify = self.detector._classify_emotions  # the call detect_emotions makes per photo
        times = []
        for i in range(n):
            t = time.perf_counter()
            classify(faces[i % 16][None])
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000


def serve(lib: str, paths_file: str, model: str | None) -> None:
    paths = Path(paths_file).read_text().split("\n")
    paths = [p for p in paths if p]
    data = [Path(p).read_bytes() for p in paths]
    runner: FacexprRunner | FerRunner
    if lib == "fer":
        runner = FerRunner()
    else:
        runner = FacexprBeforeRunner(model) if lib == "facexpr-before" else FacexprRunner(model)
    runner.answer(data[0])  # first call pays one-off costs (OpenCV, interpreter)
    emit({"ready": True, "startup_s": time.perf_counter() - STARTED})
    for line in sys.stdin:
        command = line.strip()
        if command == "round":
            ms, answers, n_faces, stages = [], [], [], []
            for d in data:
                t = time.perf_counter()
                answer, n, latency = runner.answer(d)
                ms.append((time.perf_counter() - t) * 1000)
                answers.append(answer)
                n_faces.append(n)
                stages.append(latency)
            emit({"ms": ms, "answers": answers, "faces": n_faces, "stages": stages})
        elif command.startswith("model_call"):
            emit({"model_call_ms": runner.model_call(int(command.split()[1]))})
        elif command == "quit":
            break


def once_fer(paths: list[str]) -> int:
    """What a fer user runs: load, then each photo from disk to an answer, printed."""
    import cv2

    runner = FerRunner()
    for path in paths:
        image = cv2.imread(path)
        faces = runner.detector.detect_emotions(image) if image is not None else []
        top = max(faces, key=lambda f: int(f["box"][2]) * int(f["box"][3])) if faces else None
        print(path, max(top["emotions"], key=top["emotions"].get) if top else "no face", flush=True)
    return 0


def main(argv: list[str]) -> int:
    lib, mode, *rest = argv
    if mode == "--once" and lib == "fer":
        return once_fer(rest)
    if mode == "--serve":
        serve(lib, rest[0], rest[1] if len(rest) > 1 else None)
        return 0
    raise SystemExit(f"usage: {__doc__}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A candidate in shadow: the version the registry names as `shadow` answers the faces the served
model has just answered, and its answers go onto their history records (`History.attach_shadow`).

Never shown, never returned, never served: a page, the CLI, Python and the API return the served
model's answer before the shadow sees the face. The shadow runs off the request path, in one
background thread per process with a bounded queue; when it falls behind, faces are skipped (and
counted), never waited for. Replicas agree on the candidate because they read it from the
registry (re-read every REFRESH_S). The evidence its answers give is judged in
facexpr.learn.shadow_evidence.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from facexpr.core.config import Settings
from facexpr.core.errors import FacexprError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import IMAGE_CROP, Prediction

log = logging.getLogger(__name__)

REFRESH_S = 5.0  # how often the registry's shadow name is re-read
MAX_WAITING = 256  # faces' batches queued for the shadow; beyond this they are skipped


@dataclass(frozen=True)
class _Faces:
    crops: np.ndarray
    record_ids: list[str]
    served_version: str
    crop: str  # how the served model cut them (Prediction.crop)


class ShadowRunner:
    """Answers recorded faces with the registry's shadow candidate, in the background."""

    def __init__(self, settings: Settings, max_waiting: int = MAX_WAITING) -> None:
        self.settings = settings
        self.skipped = 0  # faces not answered in shadow because the queue was full
        self._queue: queue.Queue[_Faces] = queue.Queue(max_waiting)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._model: tuple[str, Any] | None = None  # (version name, classifier)
        self._name: str | None = None
        self._next_check = 0.0
        self._history: Any = None

    def submit(self, prediction: Prediction, record_ids: list[str]) -> bool:
        """Queue PREDICTION's faces (recorded as RECORD_IDS) for the shadow; never blocks."""
        if not prediction.faces or len(record_ids) != len(prediction.faces):
            return False
        item = _Faces(np.stack([f.crop for f in prediction.faces]), list(record_ids),
                      prediction.model_version, prediction.crop)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.skipped += len(record_ids)
            return False
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="facexpr-shadow", daemon=True)
                self._thread.start()
        return True

    def drain(self) -> None:
        """Wait until every queued face has been answered in shadow (tests, shutdown)."""
        self._queue.join()

    def candidate(self) -> Any:
        """The shadow classifier the registry names now, loaded once per version; None when none."""
        from facexpr.model.classifier import load_classifier
        from facexpr.model.registry import ModelRegistry

        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + REFRESH_S
            try:
                registry = ModelRegistry(self.settings)
                self._name = registry.state().shadow
                if self._name and (self._model is None or self._model[0] != self._name):
                    self._model = (self._name, load_classifier(registry.local_path(self._name)))
            except (FacexprError, OSError) as exc:
                log.warning("shadow: %s", exc)  # keep what was loaded; try again later
        if self._model is None or self._model[0] != self._name:
            return None
        return self._model[1]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                self._answer(item)
            except Exception as exc:  # the shadow must never take anything down with it
                log.warning("shadow: could not answer %d face(s): %s", len(item.record_ids), exc)
            finally:
                self._queue.task_done()

    def _answer(self, item: _Faces) -> None:
        from facexpr.storage.history import open_history

        model = self.candidate()
        if model is None or model.version == item.served_version:
            return  # no candidate, or the candidate is served now
        if item.crop not in (model.geometry.name, IMAGE_CROP):
            return  # cut another way than the candidate reads faces (a ready crop suits any model)
        probs = model.predict(item.crops)
        self._history = self._history or open_history(self.settings)
        for record_id, p in zip(item.record_ids, probs, strict=True):
            answer = EXPRESSIONS[int(p.argmax())]
            self._history.attach_shadow(record_id, model.version, answer, float(p.max()))

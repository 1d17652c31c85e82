"""What one replica holds and does: its settings, the served model (following the registry),
the history, and the work behind the endpoints."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from facexpr.core.config import Settings
from facexpr.core.errors import (
    FacexprError,
    HistoryError,
    HistoryUnavailable,
    ModelError,
)
from facexpr.core.types import Prediction
from facexpr.serve.answers import FEEDBACK_DAYS, AnswerBook
from facexpr.serve.api.schemas import WINDOWS, HealthSummaryOut, LatencyOut, ModelHealthOut
from facexpr.serve.health_summary import health_summary, window_bounds
from facexpr.serve.shadow import ShadowRunner
from facexpr.storage.history import open_history, record_batch_safely
from facexpr.storage.store import open_store

log = logging.getLogger(__name__)


YES = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ApiSettings:
    keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = 20 * 2**20
    max_files: int = 32
    model_refresh_s: float = 30.0
    keep_uploads: bool = False  # keep each upload with its prediction, for `originals/` on feedback
    feedback_days: float = FEEDBACK_DAYS  # how long a prediction can take an answer, then swept

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ApiSettings":
        env = os.environ if env is None else env

        def listed(key: str) -> tuple[str, ...]:
            return tuple(v.strip() for v in env.get(key, "").split(",") if v.strip())

        def number(key: str, default: float) -> float:
            try:
                return float(env.get(key) or default)
            except ValueError:
                raise ModelError(f"{key} must be a number, not {env.get(key)!r}.") from None

        return cls(keys=listed("FACEXPR_API_KEYS"), cors_origins=listed("FACEXPR_API_CORS_ORIGINS"),
                   max_upload_bytes=int(number("FACEXPR_API_MAX_UPLOAD_MB", 20) * 2**20),
                   max_files=int(number("FACEXPR_API_MAX_FILES", 32)),
                   model_refresh_s=max(0.0, number("FACEXPR_API_MODEL_REFRESH_S", 30)),
                   keep_uploads=env.get("FACEXPR_API_KEEP_UPLOADS", "").strip().lower() in YES,
                   feedback_days=max(0.0, number("FACEXPR_API_FEEDBACK_DAYS", FEEDBACK_DAYS)))



class Service:
    """What one replica holds: the settings, the loaded model, the history handle, the answer book.

    The model is what the registry serves (facexpr.model.registry.served_model_path); `model()` re-reads
    the registry at most every FACEXPR_API_MODEL_REFRESH_S and swaps in a newly served version.
    """

    RETRY_AFTER_FAILURE_S = 30.0  # a version that would not load is tried again this much later

    def __init__(self, settings: Settings, api: ApiSettings) -> None:
        self.settings, self.api = settings, api
        self.classifier: Any = None
        self.history: Any = None
        self.answers = AnswerBook(settings, api.keep_uploads, api.feedback_days)
        self.shadow = ShadowRunner(settings)  # the registry's candidate answers beside, off the request path
        self._served_path: str | None = None  # the registry's answer the classifier was loaded from
        self._follow_registry = not settings.model  # FACEXPR_MODEL pins the model
        self._next_check = 0.0
        self._swap = threading.Lock()
        self._registry: Any = None

    def start(self, classifier: Any = None) -> None:
        from facexpr.model.classifier import load_classifier
        from facexpr.model.registry import served_model_path

        if classifier is not None:
            self.classifier, self._follow_registry = classifier, False
        else:
            self._served_path = served_model_path(self.settings)
            self.classifier = load_classifier(self._served_path)
        self._next_check = time.monotonic() + self.api.model_refresh_s
        try:
            self.history = open_history(self.settings)
        except HistoryError as exc:  # answers still go out; /readyz says what is wrong
            log.error("history: %s", exc)

    def model(self) -> Any:
        """The classifier to answer this request with (one per request, even across a swap)."""
        if self._follow_registry and time.monotonic() >= self._next_check:
            # One request loads; the others meanwhile answer with the model already loaded.
            if self._swap.acquire(blocking=False):
                try:
                    self._refresh()
                finally:
                    self._swap.release()
        return self.classifier

    def _refresh(self) -> None:
        from facexpr.model.classifier import load_classifier
        from facexpr.model.registry import ModelRegistry

        now = time.monotonic()
        self._next_check = now + self.api.model_refresh_s
        try:
            self._registry = self._registry or ModelRegistry(self.settings)
            name = self._registry.served()
            # Unlike at start-up, an unreadable version keeps the loaded one, not the shipped model.
            path = str(self._registry.local_path(name)) if name else None
            if path == self._served_path:
                return
            classifier = load_classifier(path)
        except (FacexprError, OSError) as exc:  # OSError: the download's local copy
            self._next_check = now + max(self.api.model_refresh_s, self.RETRY_AFTER_FAILURE_S)
            log.error("model registry: %s; still serving %s", exc, self.classifier.version)
            return
        log.warning("model registry: now serving %s (was %s)", classifier.version, self.classifier.version)
        self.classifier, self._served_path = classifier, path



def record_predictions(service: Service, done: list[Prediction]) -> tuple[str | None, list[list[str]]]:
    """Record the answers in the history (source=api) in one write; per prediction its record ids."""
    if service.history is None:
        return "The history is not available: these answers are not recorded.", [[] for _ in done]
    ids, warning = record_batch_safely(lambda: service.history, done, "api")
    ids = ids or [[] for _ in done]
    for prediction, face_ids in zip(done, ids, strict=True):
        service.shadow.submit(prediction, face_ids)
    return warning, ids


def summarise_health(service: Service, window: str) -> HealthSummaryOut:
    if service.history is None:
        raise HistoryUnavailable("The history cannot be opened; see /readyz.")
    start, end = window_bounds(WINDOWS[window])
    classifier = service.model()
    summary = health_summary(service.history, start, end, since=classifier.card.trained_at)
    return HealthSummaryOut(
        window=window, start=summary.start, served_model=classifier.version,
        predictions=summary.total, answered=summary.answered, confirmed=summary.confirmed,
        corrected=summary.corrected, agreement=summary.agreement, mean_confidence=summary.mean_confidence,
        low_confidence_share=summary.low_confidence_share, expressions=summary.expressions,
        latency_ms={stage: LatencyOut(**asdict(figures)) for stage, figures in summary.latency.items()},
        models=[ModelHealthOut(**asdict(version)) for version in summary.models],
        relabels_since_training=summary.relabels)


def readiness(service: Service) -> dict[str, str]:
    checks = {"model": "ok" if service.classifier is not None else "not loaded"}
    try:
        open_store(service.settings.relabeled_uri).exists("_facexpr-readyz")
        checks["store"] = "ok"
    except FacexprError as exc:
        checks["store"] = str(exc)
    if service.history is None:
        checks["history"] = "cannot be opened"
    else:
        try:
            service.history.count(datetime.now(UTC), None)
            checks["history"] = "ok"
        except FacexprError as exc:
            checks["history"] = str(exc)
    return checks



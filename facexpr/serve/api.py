"""The HTTP API: `facexpr serve` (FastAPI + uvicorn), thin over the facexpr functions.

    POST /v1/predictions                  multipart `file` (one or more) → faces, probabilities, ids
    POST /v1/predictions/{id}/feedback    {face_index, label} → the crop stored under its label
    GET  /v1/models                       the versions found and which one answers
    GET  /v1/health/summary?window=7d     the model-health page's figures
    GET  /healthz, /readyz                alive; ready (model loaded, store and history reachable)

A replica keeps no state of its own beyond caches: predictions go to the history (MongoDB, or
the embedded file) with source=api, and what feedback needs goes to the shared store
(facexpr.serve.answers), so any number of replicas behind a load balancer serve one team.

Settings (environment): everything in facexpr.core.config, plus FACEXPR_API_KEYS (comma-separated;
unset = no keys needed), FACEXPR_API_CORS_ORIGINS (comma-separated; unset = no CORS headers),
FACEXPR_API_MAX_UPLOAD_MB (request body cap, default 20), FACEXPR_API_MAX_FILES (default 32) and
FACEXPR_API_MODEL_REFRESH_S (default 30; 0 = every request): how often, at most, a request makes the
replica re-read the model registry, so a `promote` or `rollback` reaches every replica without a restart.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Query, Request, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from facexpr import __version__
from facexpr.core.config import Settings, load_settings
from facexpr.core.errors import (
    FacexprError,
    HistoryBuffered,
    HistoryError,
    HistoryUnavailable,
    ImageError,
    LabelError,
    ModelError,
    StoreError,
    StoreUnavailable,
)
from facexpr.core.labels import EXPRESSIONS
from facexpr.model.predict import Prediction, predict_many
from facexpr.serve.answers import AnswerBook, Kept, UnknownPrediction, new_id
from facexpr.storage.history import open_history
from facexpr.storage.store import open_store

log = logging.getLogger(__name__)

WINDOWS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "all": "All time"}
Window = Literal["24h", "7d", "30d", "all"]
FacesMode = Literal["auto", "detect", "crop", "whole"]


@dataclass(frozen=True)
class ApiSettings:
    keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = 20 * 2**20
    max_files: int = 32
    model_refresh_s: float = 30.0

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
                   model_refresh_s=max(0.0, number("FACEXPR_API_MODEL_REFRESH_S", 30)))


# ---------------------------------------------------------------- the documents

class ErrorDetail(BaseModel):
    code: str = Field(description="for programs: invalid_request, bad_image, unknown_label, too_large, …")
    message: str = Field(description="what went wrong, in words a person can act on")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class FaceOut(BaseModel):
    face_index: int = Field(description="the face's number in this image, largest first, from 0")
    box: list[int] = Field(description="[x, y, width, height] in the image's pixels",
                           min_length=4, max_length=4)
    expression: str = Field(description="one of the seven: " + ", ".join(EXPRESSIONS))
    confidence: float = Field(ge=0, le=1)
    probabilities: dict[str, float] = Field(description="all seven expressions, FER2013 order")


class PredictionOut(BaseModel):
    id: str = Field(description="for POST /v1/predictions/{id}/feedback")
    filename: str | None
    image_sha256: str
    mode: str = Field(description="how faces were found: detect, crop (a ready face crop) or whole")
    faces: list[FaceOut]
    latency_ms: dict[str, float] = Field(description="decode, detect, classify, total (in process)")
    warnings: list[str] = Field(default_factory=list)


class PredictionsOut(BaseModel):
    model_version: str
    latency_ms: float = Field(description="the whole request, as the server measured it")
    predictions: list[PredictionOut]


class FeedbackIn(BaseModel):
    face_index: int = Field(ge=0, le=10_000)
    label: str = Field(max_length=64, description="the true expression: " + ", ".join(EXPRESSIONS))


class FeedbackOut(BaseModel):
    prediction_id: str
    face_index: int
    label: str
    confirmed: bool = Field(description="the person agreed with the model")
    predicted: str
    location: str = Field(description="where the crop is (or will be, when queued)")
    queued: bool = Field(description="the store could not take it now; it waits in the outbox")
    replaced: str | None = Field(description="the earlier answer's label this one replaced, if any")
    message: str
    warnings: list[str] = Field(default_factory=list)


class ModelOut(BaseModel):
    version: str
    source: Literal["registry", "shipped", "file"] = Field(
        description="registry: a version in the model store; shipped: models/; file: FACEXPR_MODEL")
    trained_at: str | None
    val_accuracy: float | None
    served: bool = Field(description="this replica answers with it")


class ModelsOut(BaseModel):
    served: str
    models: list[ModelOut]


class LatencyOut(BaseModel):
    p50_ms: float | None
    p95_ms: float | None
    n: int


class ModelHealthOut(BaseModel):
    model_version: str
    predictions: int
    mean_confidence: float | None
    answered: int
    agreement: float | None


class HealthSummaryOut(BaseModel):
    window: str
    start: datetime | None
    served_model: str
    predictions: int
    answered: int
    confirmed: int
    corrected: int
    agreement: float | None
    mean_confidence: float | None
    low_confidence_share: float | None
    expressions: dict[str, int] = Field(description="predictions per expression in the window")
    latency_ms: dict[str, LatencyOut]
    models: list[ModelHealthOut]
    relabels_since_training: dict[str, int]


class ReadyOut(BaseModel):
    ready: bool
    model: str | None
    checks: dict[str, str]


# ---------------------------------------------------------------- errors as JSON

def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


ERRORS = {code: {"model": ErrorResponse} for code in (401, 404, 413, 422, 503)}

_FACEXPR_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (UnknownPrediction, 404, "unknown_prediction"),
    (ImageError, 422, "bad_image"),
    (LabelError, 422, "unknown_label"),
    (HistoryUnavailable, 503, "history_unavailable"),
    (StoreUnavailable, 503, "store_unavailable"),
    (StoreError, 503, "store_error"),
    (HistoryError, 503, "history_error"),
    (ModelError, 503, "model_error"),
)


class TooLarge(Exception):
    """The request body passed the cap while it was being read."""


class BodyCap:
    """An ASGI wrapper: a body over the cap is refused with 413 before it is parsed or kept."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen, exceeded = 0, False

        async def counted() -> dict:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise TooLarge()
            return message

        async def guarded(message: dict) -> None:
            if not exceeded:  # the app's own answer to a cut-off body (a parse error) is dropped
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except TooLarge:
            pass
        if exceeded:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        response = _error(413, "too_large", f"The request is over the {self.limit / 2**20:.0f} MB limit "
                                            "(FACEXPR_API_MAX_UPLOAD_MB); send fewer or smaller files.")
        await response(scope, receive, send)


# ---------------------------------------------------------------- the app

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
        self.answers = AnswerBook(settings)
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


def create_app(settings: Settings | None = None, api_settings: ApiSettings | None = None,
               classifier: Any = None) -> FastAPI:
    """The ASGI app (uvicorn calls it as a factory in each worker). The model loads at start-up."""
    settings = settings or load_settings()
    api = api_settings or ApiSettings.from_env()
    service = Service(settings, api)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start(classifier)
        yield
        if service.history is not None:
            service.history.close()

    app = FastAPI(title="facexpr", version=__version__, lifespan=lifespan,
                  description="Facial expressions in headshots: seven classes (" + ", ".join(EXPRESSIONS)
                  + "). Answers can be confirmed or corrected; corrections train the next model.")
    app.state.service = service

    @app.exception_handler(FacexprError)
    async def _facexpr_error(_: Request, exc: FacexprError) -> JSONResponse:
        for kind, status, code in _FACEXPR_STATUS:
            if isinstance(exc, kind):
                return _error(status, code, str(exc))
        return _error(422, "invalid_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "; ".join(problems) or "The request is not valid.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}
        code = names.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "internal", "facexpr could not answer this request; the server log has details.")

    bearer = HTTPBearer(auto_error=False, description="one of FACEXPR_API_KEYS, when set")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of FACEXPR_API_KEYS")

    def require_key(token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
                    key: Annotated[str | None, Security(header_key)] = None) -> None:
        if not api.keys:
            return
        given = key or (token.credentials if token else "")
        if not any(hmac.compare_digest(given.encode(), k.encode()) for k in api.keys):
            raise StarletteHTTPException(401, "An API key is required: send it as "
                                              "`Authorization: Bearer KEY` or `X-API-Key: KEY`.")

    guarded = [Depends(require_key)]

    @app.post("/v1/predictions", response_model=PredictionsOut, responses=ERRORS, dependencies=guarded,
              summary="Classify the faces in one or more images")
    def predictions(file: Annotated[list[UploadFile], File(description="the image file(s): JPEG, PNG, "
                                                           "WebP, BMP, TIFF or GIF")],
                    faces: Annotated[FacesMode, Query(description="auto: images ≤ 64 px are ready face "
                                                      "crops, larger ones are searched for faces; whole: the "
                                                      "centre of the image as one face")] = "auto",
                    ) -> PredictionsOut:
        started = time.perf_counter()
        if len(file) > api.max_files:
            raise ImageError(f"{len(file)} files in one request; the limit is {api.max_files} "
                             "(FACEXPR_API_MAX_FILES).")
        uploads = [(u.filename, u.file.read()) for u in file]
        classifier = service.model()
        answers = predict_many((data for _, data in uploads), classifier, faces)
        for (name, _), answer in zip(uploads, answers, strict=True):
            if isinstance(answer, FacexprError):  # nothing of a refused request is recorded
                raise type(answer)(f"{name or 'file'}: {answer}" if len(uploads) > 1 else str(answer))
        done: list[Prediction] = [a for a in answers if isinstance(a, Prediction)]
        history_warning, ids = _record(service, done)
        out = []
        for (name, data), prediction, record_ids in zip(uploads, done, ids, strict=True):
            pid = new_id()
            warnings = [w for w in (history_warning,
                                    service.answers.keep(Kept(pid, prediction, data, record_ids))) if w]
            out.append(PredictionOut(
                id=pid, filename=name, image_sha256=prediction.image_sha256, mode=prediction.mode,
                faces=[FaceOut(face_index=i, **f.to_dict()) for i, f in enumerate(prediction.faces)],
                latency_ms=prediction.latency_ms, warnings=warnings))
        return PredictionsOut(model_version=classifier.version, predictions=out,
                              latency_ms=round((time.perf_counter() - started) * 1000, 3))

    @app.post("/v1/predictions/{prediction_id}/feedback", response_model=FeedbackOut, responses=ERRORS,
              dependencies=guarded, summary="Confirm or correct one face's answer")
    def feedback(prediction_id: Annotated[str, PathParam(max_length=64)], body: FeedbackIn) -> FeedbackOut:
        saved, replaced, warnings = service.answers.answer(prediction_id, body.face_index, body.label,
                                                           service.history)
        return FeedbackOut(prediction_id=prediction_id, face_index=body.face_index, label=saved.label,
                           confirmed=saved.confirmed, predicted=saved.predicted, location=saved.location,
                           queued=saved.queued, replaced=replaced.label if replaced else None,
                           message=saved.message(), warnings=warnings)

    @app.get("/v1/models", response_model=ModelsOut, responses=ERRORS, dependencies=guarded,
             summary="The model versions found, and which one answers")
    def models() -> ModelsOut:
        from facexpr.model.classifier import MODELS_DIR, list_models, read_card
        from facexpr.model.registry import ModelRegistry

        classifier = service.model()
        served = classifier.version
        found: dict[str, ModelOut] = {}
        try:
            for v in ModelRegistry(service.settings).versions():
                found.setdefault(v.name, ModelOut(version=v.name, source="registry", trained_at=v.created,
                                                  val_accuracy=v.val_accuracy, served=v.name == served))
        except FacexprError as exc:  # the registry unreachable: still list what this replica has
            log.warning("model registry: %s", exc)
        shipped = list_models(MODELS_DIR)
        extra = [classifier.path] if classifier.path and Path(classifier.path) not in shipped else []
        for path in shipped + extra:
            card = read_card(Path(path))
            source = "shipped" if Path(path) in shipped else "file" if service.settings.model else "registry"
            found.setdefault(card.name, ModelOut(
                version=card.name, source=source, val_accuracy=card.val.accuracy, served=card.name == served,
                trained_at=card.trained_at.isoformat() if card.trained_at else None))
        return ModelsOut(served=served, models=list(found.values()))

    @app.get("/v1/health/summary", response_model=HealthSummaryOut, responses=ERRORS, dependencies=guarded,
             summary="The model-health figures for a time window")
    def health_summary(window: Annotated[Window, Query()] = "7d") -> HealthSummaryOut:
        return _health(service, window)

    @app.get("/healthz", summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}},
             summary="Ready to answer: model loaded, store and history reachable")
    def readyz() -> JSONResponse:
        checks = _readiness(service)
        ready = all(v == "ok" for v in checks.values())
        body = ReadyOut(ready=ready, model=service.classifier.version if service.classifier else None,
                        checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    if api.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(api.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(BodyCap, limit=api.max_upload_bytes)
    return app


def _record(service: Service, done: list[Prediction]) -> tuple[str | None, list[list[str]]]:
    """Record the answers in the history (source=api) in one write; per prediction its record ids."""
    if service.history is None:
        return "The history is not available: these answers are not recorded.", [[] for _ in done]
    from facexpr.storage.history import documents_for

    docs = [doc for p in done for doc in documents_for(p, "api")]
    warning = None
    try:
        flat = service.history.insert_documents(docs) if docs else []
    except HistoryBuffered as exc:
        flat, warning = exc.record_ids, str(exc)
    except FacexprError as exc:
        return f"These answers could not be added to the history: {exc}", [[] for _ in done]
    ids, offset = [], 0
    for p in done:
        ids.append(list(flat[offset:offset + len(p.faces)]))  # a no-face photo has no face ids
        offset += max(1, len(p.faces))  # ... but one no-face document
    return warning, ids


def _health(service: Service, window: str) -> HealthSummaryOut:
    from facexpr.serve.health import health_report, window_bounds

    if service.history is None:
        raise HistoryUnavailable("The history cannot be opened; see /readyz.")
    start, end = window_bounds(WINDOWS[window])
    classifier = service.model()
    report = health_report(service.history, start, end, since=classifier.card.trained_at)

    def num(value: Any) -> float | None:
        return None if value is None or value != value else float(value)  # NaN → None

    per_expression = report.daily.groupby("expression")["predictions"].sum() if not report.daily.empty else {}
    return HealthSummaryOut(
        window=window, start=report.start, served_model=classifier.version,
        predictions=report.total, answered=report.answered, confirmed=report.confirmed,
        corrected=report.corrected, agreement=num(report.agreement),
        mean_confidence=num(report.mean_confidence),
        low_confidence_share=num(report.low_confidence_share),
        expressions={e: int(per_expression.get(e, 0)) if len(per_expression) else 0 for e in EXPRESSIONS},
        latency_ms={r.stage: LatencyOut(p50_ms=num(r.p50_ms), p95_ms=num(r.p95_ms), n=int(r.n))
                    for r in report.latency.itertuples()},
        models=[ModelHealthOut(model_version=r.model_version, predictions=int(r.predictions),
                               mean_confidence=num(r.mean_confidence), answered=int(r.answered),
                               agreement=num(r.agreement)) for r in report.models.itertuples()],
        relabels_since_training={r.label: int(r.total) for r in report.relabels.itertuples()})


def _readiness(service: Service) -> dict[str, str]:
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


def openapi_json() -> str:
    """The schema as committed in docs/openapi.json (made without loading the model)."""
    app = create_app(Settings(), ApiSettings())
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

"""The app: create_app wires the endpoints onto a Service; openapi_json is the schema."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Query, Request, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from facexpr.core.config import Settings, load_settings
from facexpr.core.errors import (
    FacexprError,
    ImageError,
)
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import Prediction
from facexpr.core.version import __version__
from facexpr.model.predict import predict_many
from facexpr.serve.answers import Kept, new_id
from facexpr.serve.api.errors import ERRORS, FACEXPR_STATUS, BodyCap, error_response
from facexpr.serve.api.schemas import (
    FaceOut,
    FacesMode,
    FeedbackIn,
    FeedbackOut,
    HealthSummaryOut,
    ModelOut,
    ModelsOut,
    PredictionOut,
    PredictionsOut,
    ReadyOut,
    Window,
)
from facexpr.serve.api.service import ApiSettings, Service, readiness, record_predictions, summarise_health

log = logging.getLogger(__name__)


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
        for kind, status, code in FACEXPR_STATUS:
            if isinstance(exc, kind):
                return error_response(status, code, str(exc))
        return error_response(422, "invalid_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(problems) or "The request is not valid.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}
        code = names.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal",
                              "facexpr could not answer this request; the server log has details.")

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
        history_warning, ids = record_predictions(service, done)
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
        return summarise_health(service, window)

    @app.get("/healthz", summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}},
             summary="Ready to answer: model loaded, store and history reachable")
    def readyz() -> JSONResponse:
        checks = readiness(service)
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



def openapi_json() -> str:
    """The schema as committed in docs/openapi.json (made without loading the model)."""
    app = create_app(Settings(), ApiSettings())
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

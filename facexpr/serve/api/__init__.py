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
replica re-read the model registry, so a `promote` or `rollback` reaches every replica without a restart;
FACEXPR_API_KEEP_UPLOADS (off: only the crops are kept for feedback) and FACEXPR_API_FEEDBACK_DAYS
(default 7: predictions older than that are swept).
"""

from facexpr.serve.api.app import create_app, openapi_json
from facexpr.serve.api.service import ApiSettings, Service

__all__ = ["ApiSettings", "Service", "create_app", "openapi_json"]

"""Errors as JSON: facexpr's errors mapped to HTTP statuses, and the request-body cap."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
from typing import Any

from fastapi.responses import JSONResponse

from facexpr.core.errors import (
    HistoryError,
    HistoryUnavailable,
    ImageError,
    LabelError,
    ModelError,
    StoreError,
    StoreUnavailable,
)
from facexpr.serve.answers import UnknownPrediction
from facexpr.serve.api.schemas import ErrorResponse


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


ERRORS = {code: {"model": ErrorResponse} for code in (401, 404, 413, 422, 503)}

FACEXPR_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
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
        response = error_response(413, "too_large",
                                  f"The request is over the {self.limit / 2**20:.0f} MB limit "
                                  "(FACEXPR_API_MAX_UPLOAD_MB); send fewer or smaller files.")
        await response(scope, receive, send)



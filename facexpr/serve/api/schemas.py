"""The API's documents: what each endpoint takes and returns (its OpenAPI schema)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from facexpr.core.labels import EXPRESSIONS

WINDOWS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "all": "All time"}
Window = Literal["24h", "7d", "30d", "all"]
FacesMode = Literal["auto", "detect", "crop", "whole"]



class ErrorDetail(BaseModel):
    code: str = Field(description="for programs: invalid_request, bad_image, unknown_label, too_large, …")
    message: str = Field(description="what went wrong, in words a person can act on")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class FaceOut(BaseModel):
    face_index: int = Field(description="the face's number in this image, left to right, from 0")
    box: list[int] = Field(description="[x, y, width, height] in the image's pixels",
                           min_length=4, max_length=4)
    expression: str = Field(description="one of the seven: " + ", ".join(EXPRESSIONS))
    confidence: float = Field(ge=0, le=1)
    unsure: bool = Field(description="the confidence is below the model's threshold (its card: where its "
                                     "answers on development photos were wrong more often than right); "
                                     "show runner_up beside the expression")
    runner_up: str = Field(description="the second most likely expression")
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



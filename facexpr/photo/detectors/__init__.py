"""Face detectors, one wrapper each behind `FaceDetector`: BlazeFace (+ face mesh) and OpenCV's Haar
cascade (OpenCV comes with the `haar` or `train` extra). `get_detector(name)` returns a shared
instance."""

from __future__ import annotations

from functools import cache

from facexpr.photo.detectors.base import FaceDetector, FoundFace

DETECTORS = ("blazeface", "blazeface-keypoints", "haar")


@cache
def get_detector(name: str = "blazeface") -> FaceDetector:
    if name == "blazeface":
        from facexpr.photo.detectors.blazeface import BlazeFaceDetector

        return BlazeFaceDetector(mesh=True)
    if name == "blazeface-keypoints":
        from facexpr.photo.detectors.blazeface import BlazeFaceDetector

        return BlazeFaceDetector(mesh=False)
    if name == "haar":
        from facexpr.core.extras import require

        require("haar", "The Haar face detector (the haar-box crop of older models)")
        from facexpr.photo.detectors.haar import HaarDetector

        return HaarDetector()
    raise ValueError(f"Unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}.")


__all__ = ["DETECTORS", "FaceDetector", "FoundFace", "get_detector"]

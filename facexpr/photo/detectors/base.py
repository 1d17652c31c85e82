"""What every face detector gives: where each face is and, where it can tell, its eyes and mouth."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facexpr.core.errors import ModelError
from facexpr.core.types import Box, Landmarks
from facexpr.photo import resample

# The detectors' weights: models/face-finder/ in a checkout, facexpr/models/face-finder/ installed.
_HERE = Path(__file__).resolve()
WEIGHTS_DIRS = (_HERE.parents[3] / "models" / "face-finder", _HERE.parents[2] / "models" / "face-finder")


def weights_path(name: str) -> Path:
    for folder in WEIGHTS_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise ModelError(f"The face finder's weights {name} are missing (looked in "
                     f"{', '.join(str(d) for d in WEIGHTS_DIRS)}): reinstall facexpr.")


Resize = Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # (image, (width, height)) → resized


def shrink(gray: np.ndarray, max_side: int, area: Resize = resample.area) -> tuple[np.ndarray, float, float]:
    """A copy no larger than MAX_SIDE, shrunk by AREA (averaging), and its x and y scale against GRAY."""
    height, width = gray.shape
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return gray, 1.0, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return area(gray, size), size[0] / width, size[1] / height


@dataclass(frozen=True)
class FoundFace:
    box: Box
    landmarks: Landmarks | None  # None where the detector cannot tell (Haar)
    score: float = 1.0

    def shifted(self, dx: float, dy: float) -> FoundFace:
        box = Box(round(self.box.x + dx), round(self.box.y + dy), self.box.w, self.box.h)
        return FoundFace(box, self.landmarks.shifted(dx, dy) if self.landmarks else None, self.score)

    def scaled(self, fx: float, fy: float | None = None) -> FoundFace:
        """In the coordinates of a copy FX (across) and FY (down; default FX) times as large."""
        fy = fx if fy is None else fy
        if fx == fy == 1:
            return self
        box = Box(round(self.box.x * fx), round(self.box.y * fy),
                  round(self.box.w * fx), round(self.box.h * fy))
        return FoundFace(box, self.landmarks.scaled(fx, fy) if self.landmarks else None, self.score)

    def clipped(self, width: int, height: int) -> FoundFace:
        """The box cut to the image (landmarks stay where they are: a face may leave the frame)."""
        x0, y0 = max(0, self.box.x), max(0, self.box.y)
        x1, y1 = min(width, self.box.x + self.box.w), min(height, self.box.y + self.box.h)
        return FoundFace(Box(x0, y0, max(1, x1 - x0), max(1, y1 - y0)), self.landmarks, self.score)


class FaceDetector(ABC):
    """One detector backend: gray photo → faces, in any order (the photo path orders them)."""

    name: str

    @abstractmethod
    def find(self, gray: np.ndarray) -> list[FoundFace]: ...

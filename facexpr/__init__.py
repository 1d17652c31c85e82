"""facexpr: facial-expression recognition for headshots, improved by people's corrections.

    import facexpr
    faces = facexpr.Recognizer().classify("photo.jpg")   # [Face(box, expression, confidence, probabilities)]

See facexpr.serve.recognizer for the inputs it takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from facexpr.core.errors import FacexprError, ImageError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.version import __version__

__all__ = ["EXPRESSIONS", "Face", "FacexprError", "ImageError", "Recognizer", "__version__"]

if TYPE_CHECKING:
    from facexpr.serve.recognizer import Face, Recognizer


def __getattr__(name: str) -> Any:
    # Imported on first use: `import facexpr` (and the CLI's start-up) stays free of OpenCV and TensorFlow.
    if name in ("Recognizer", "Face"):
        from facexpr.serve import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'facexpr' has no attribute {name!r}")

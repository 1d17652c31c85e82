"""The seven expressions, in FER2013 index order (index i is FER2013 label i)."""

from facexpr.core.errors import LabelError

EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EXPRESSIONS)
INDEX = {name: i for i, name in enumerate(EXPRESSIONS)}
CROP_SIZE = 48  # FER2013's face crops are 48×48 gray: what the labels above are given to


def parse_label(value: str) -> str:
    """Return the canonical expression name, or raise LabelError naming the seven."""
    name = str(value).strip().lower()
    if name not in INDEX:
        raise LabelError(f"Unknown expression {value!r}: choose one of {', '.join(EXPRESSIONS)}.")
    return name

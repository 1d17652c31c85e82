"""Seed corrections from a labelled photo folder, through exactly the Classify page's path.

`DIR/<expression>/<image>`: each photo is decoded, searched for faces, cropped and classified
(`predict_image`), its crop stored under the folder's label (`save_relabel`, original included),
and the prediction recorded in the history with that answer as its feedback. A photo with no face
or several faces is reported and skipped; a photo that cannot be read is reported; nothing is
stored for either, and the history only records what was stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from facexpr.core.config import Settings
from facexpr.core.errors import DataError, FacexprError
from facexpr.core.labels import EXPRESSIONS, INDEX
from facexpr.model.classifier import Classifier
from facexpr.model.predict import predict_image
from facexpr.storage.history import HistoryOpener, feedback_safely, record_safely
from facexpr.storage.relabel import save_relabel


@dataclass
class ImportReport:
    imported: int = 0
    confirmed: int = 0  # the model already said the folder's label
    queued: int = 0  # stored in the outbox (the store could not take them now)
    per_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXPRESSIONS, 0))
    no_face: list[str] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    history_warnings: list[str] = field(default_factory=list)

    @property
    def corrected(self) -> int:
        return self.imported - self.confirmed

    @property
    def skipped(self) -> int:
        return len(self.no_face) + len(self.several_faces) + len(self.unreadable)


def labelled_files(root: Path) -> list[tuple[Path, str]]:
    """(file, expression) for every file under ROOT/<expression>/, in a stable order."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    files = sorted((p, d.name) for d in root.iterdir() if d.is_dir() and d.name in INDEX
                   for p in d.iterdir() if (p.is_file() or p.is_symlink()) and not p.name.startswith("."))
    if not files:
        raise DataError(f"No images under {root}/<expression>/ (expressions: {', '.join(EXPRESSIONS)}).")
    return files


def group_for(path: Path, pattern: re.Pattern[str] | None) -> str | None:
    """The group (a person) a photo belongs to: PATTERN's first group in the file name, if it matches."""
    match = pattern.search(path.name) if pattern else None
    return match.group(1) if match and match.groups() else (match.group(0) if match else None)


def import_corrections(settings: Settings, root: Path, classifier: Classifier, history: HistoryOpener | None,
                       source: str = "import", group_pattern: str | None = None,
                       progress: Callable[[int, int, str], None] | None = None) -> ImportReport:
    pattern = re.compile(group_pattern) if group_pattern else None
    files = labelled_files(Path(root))
    out = ImportReport()
    for n, (path, label) in enumerate(files, 1):
        name = f"{label}/{path.name}"
        try:
            data = path.read_bytes()
            prediction = predict_image(data, classifier, "auto")
        except (FacexprError, OSError) as exc:
            out.unreadable.append((name, str(exc)))
            continue
        if prediction.no_face:
            out.no_face.append(name)
        elif len(prediction.faces) > 1:
            out.several_faces.append(name)
        else:
            try:
                saved = save_relabel(settings, prediction, 0, label, data, group=group_for(path, pattern))
            except FacexprError as exc:  # even the outbox could not keep it: nothing was stored
                out.unreadable.append((name, f"not stored: {exc}"))
                continue
            # As the page does: the prediction is recorded, then the person's answer attached to it.
            ids, warning = record_safely(history, prediction, source)
            if ids:
                warning = feedback_safely(history, ids[0], saved.label, saved.confirmed,
                                          saved.object_key) or warning
            if warning:
                out.history_warnings.append(f"{name}: {warning}")
            out.imported += 1
            out.confirmed += saved.confirmed
            out.queued += saved.queued
            out.per_class[label] += 1
        if progress:
            progress(n, len(files), name)
    return out

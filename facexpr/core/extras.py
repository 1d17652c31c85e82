"""The optional parts of facexpr and the pip extra that installs each.

`pip install facexpr` answers (Python, CLI, HTTP) on LiteRT; training, retraining, exporting and
Grad-CAM need TensorFlow (`facexpr[train]`), the Streamlit app needs `facexpr[app]`, and OpenCV's
Haar detector (the crop of models fine-tuned before alignment) `facexpr[haar]`. A command
that needs a part that is missing says which extra to install instead of showing a traceback.
"""

from __future__ import annotations

import importlib

from facexpr.core.errors import FacexprError

EXTRAS = {"train": ("tensorflow", "keras", "cv2"), "app": ("streamlit", "altair", "pandas"), "haar": ("cv2",)}


class MissingExtra(FacexprError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def install_hint(extra: str) -> str:
    return f"pip install 'facexpr[{extra}]'"


def installed(extra: str, modules: tuple[str, ...] | None = None) -> bool:
    """Whether EXTRA's modules (or only MODULES of them) can be imported."""
    try:
        require(extra, "", modules)
    except MissingExtra:
        return False
    return True


def require(extra: str, purpose: str, modules: tuple[str, ...] | None = None) -> None:
    """Import EXTRA's modules (or only MODULES of them), or raise MissingExtra: "PURPOSE needs X,
    which is not installed: …"."""
    for module in modules or EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtra(f"{purpose} needs {module}, which is not installed: "
                               f"{install_hint(extra)}.") from exc

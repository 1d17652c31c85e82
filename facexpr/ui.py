"""The Streamlit boundary: cached resources and session helpers shared by the pages.

This is the one facexpr module that imports Streamlit; everything it calls is plain Python.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from facexpr.config import Settings, load_settings
from facexpr.model import Classifier, load_classifier


def _secrets() -> dict[str, Any]:
    try:
        return dict(st.secrets)
    except Exception:  # no secrets.toml is the normal embedded-defaults case
        return {}


def get_settings() -> Settings:
    return load_settings(_secrets())


@st.cache_resource(show_spinner="Loading the model…")
def get_classifier(path: str | None = None) -> Classifier:
    """Loaded once per process and shared by every session (the model is read-only)."""
    return load_classifier(path)


def served_classifier() -> Classifier:
    return get_classifier(get_settings().model)


def classify_cached(data: bytes, mode: str = "auto"):
    """Predict once per (upload, faces mode, model) in this session: widget reruns reuse it.

    Returns (prediction, is_new); is_new tells the page this answer has not been recorded yet.
    """
    import hashlib

    from facexpr.predict import predict_image

    classifier = served_classifier()
    key = ("prediction", hashlib.sha256(data).hexdigest(), mode, classifier.version)
    cached = st.session_state.get("_last_prediction")
    if cached is not None and cached[0] == key:
        return cached[1], False
    prediction = predict_image(data, classifier, mode)
    st.session_state["_last_prediction"] = (key, prediction)
    return prediction, True

"""The Streamlit boundary: cached resources and session helpers shared by the pages.

This is the one facexpr module that imports Streamlit (and `st.session_state`); everything it
calls is plain Python.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st

from facexpr.core.config import Settings, load_settings
from facexpr.core.types import Prediction
from facexpr.model.classifier import Classifier, load_classifier
from facexpr.model.predict import predict_image
from facexpr.model.registry import served_model_path
from facexpr.serve.shadow import ShadowRunner
from facexpr.storage.history import History, feedback_safely, open_history, record_batch_safely, record_safely
from facexpr.storage.relabel import RelabelSummary, SaveResult, relabel_summary, save_relabel

ANSWER_KEY_SEP = "-"  # between a widget's contract name and the answer it belongs to


def answer_id(prediction: Prediction) -> str:
    """A short id of one answer: the image, how its faces were found, and the model that answered."""
    text = f"{prediction.image_sha256}\n{prediction.mode}\n{prediction.model_version}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def answer_key(name: str, prediction: Prediction, face_index: int | None = None) -> str:
    """The key of a widget that belongs to one answer: `NAME[_<face index>]-<answer id>`.

    The answer's id in the key gives every answer its own widgets, so the browser can never send
    a chooser's value for the previous photo back as this one's (a fixed key would carry it over).
    """
    suffix = "" if face_index is None else f"_{face_index}"
    return f"{name}{suffix}{ANSWER_KEY_SEP}{answer_id(prediction)}"


def key_name(key: str | None) -> str:
    """A widget key without its answer id: `relabel_label_1-3f2a…` → `relabel_label_1` (tests find
    widgets by this contract name)."""
    return (key or "").split(ANSWER_KEY_SEP, 1)[0]


def widget_named(widgets: Any, name: str) -> Any:
    """The one widget among WIDGETS (e.g. an AppTest's `at.selectbox`) whose key_name is NAME."""
    found = [w for w in widgets if key_name(w.key) == name]
    if len(found) != 1:
        raise KeyError(f"{len(found)} widgets named {name!r} among {[w.key for w in widgets]}")
    return found[0]


LAST_PHOTO = "classify_last_photo"  # session state: the photo Classify answered last


@dataclass(frozen=True)
class Photo:
    """A photo a person gave the Classify page: its name, bytes, where it came from and its id."""

    name: str
    data: bytes
    source: str  # upload | camera
    file_id: str


def remember_photo(photo: Photo) -> None:
    st.session_state[LAST_PHOTO] = photo


def forget_photo() -> None:
    """The person removed the photo (the uploader's ×, a new camera shot pending): do not bring it back."""
    st.session_state.pop(LAST_PHOTO, None)


def remembered_photo(source: str) -> Photo | None:
    """The photo answered last in this session, from SOURCE, when its widget came back empty only
    because the person went to another page (Streamlit drops a widget's value when its page is left)."""
    photo = st.session_state.get(LAST_PHOTO)
    return photo if isinstance(photo, Photo) and photo.source == source else None


def through_the_entry_script() -> None:
    """Call first in every page: make sure the page runs inside streamlit_app.py's navigation.

    With a `pages/` folder beside the entry script, Streamlit starts in its old multipage mode
    and, until some session has run the entry script (which calls st.navigation and ends that
    mode), serves a deep link such as `/batch` by running the page alone: the automatic page
    list, no sidebar captions, the tab titled "batch". The folder name is part of the product, so
    instead the page ends that mode itself and reruns, now through the entry script.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # what st.navigation itself sets on its first call
        st.rerun()


NARROW_SCREEN_PX = 768  # Streamlit's own "md" breakpoint: below it the sidebar covers the page

_CLOSE_SIDEBAR_JS = """<script>
(() => {{  // {nonce}
  if (window.innerWidth > {narrow}) return;
  const sidebar = document.querySelector("[data-testid='stSidebar']");
  const close = document.querySelector("[data-testid='stSidebarCollapseButton'] button");
  if (sidebar && close && sidebar.getBoundingClientRect().width > 0) close.click();
}})();
</script>"""


def close_sidebar_after_navigation(page_key: str) -> None:
    """On a narrow screen, close the sidebar once a page was chosen in it.

    Streamlit does this itself only for browsers that call themselves mobile; a narrow desktop
    window (or a phone asking for the desktop site) kept the sidebar open over ~77 % of the page.
    """
    previous = st.session_state.get("_shown_page")
    st.session_state["_shown_page"] = page_key
    if previous is not None and previous != page_key:
        nonce = st.session_state["_page_changes"] = st.session_state.get("_page_changes", 0) + 1
        st.html(_CLOSE_SIDEBAR_JS.format(nonce=nonce, narrow=NARROW_SCREEN_PX), unsafe_allow_javascript=True,
                width="content")


STACKED_COLUMNS_PX = 640  # Streamlit's "sm" breakpoint: below it columns wrap one under another

_SECOND_COLUMN_FIRST_CSS = """<style>
@media (max-width: {stacked}px) {{
  .st-key-{key} > [data-testid='stLayoutWrapper'] > [data-testid='stHorizontalBlock']
    > [data-testid='stColumn']:nth-child(2) {{ order: -1; }}
}}
</style>"""


def second_column_first_when_stacked(container_key: str) -> None:
    """Where the columns of the container keyed CONTAINER_KEY stack (a phone), show the second one
    first: on Classify the answer, which otherwise sat 1.5 screens below the photo."""
    st.html(_SECOND_COLUMN_FIRST_CSS.format(stacked=STACKED_COLUMNS_PX, key=container_key))


def upload_limits() -> str:
    """What the upload accepts, in the words shown where a photo is chosen: the formats, the
    server's size cap (.streamlit/config.toml) and the decoder's pixel limit, so they agree."""
    from facexpr.photo.imaging import MAX_PIXELS, READABLE_FORMATS

    megabytes = int(st.get_option("server.maxUploadSize"))
    return (f"{READABLE_FORMATS}; up to {megabytes} MB and {MAX_PIXELS / 1e6:.0f} megapixels "
            f"(e.g. {_example_size(MAX_PIXELS)} pixels)")


def _example_size(pixels: int) -> str:
    """A 3:2 photo of PIXELS, in round hundreds: 40 MP → 7,700 × 5,100."""
    width = int((pixels * 1.5) ** 0.5) // 100 * 100
    return f"{width:,} × {int(pixels / width) // 100 * 100:,}"


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


def served_model() -> str | None:
    """The model file this session uses: the sidebar's choice, else what every process serves —
    FACEXPR_MODEL, else the registry's served version — else None (the newest in models/)."""
    return st.session_state.get("model_choice") or registry_served(get_settings())


def registry_served(settings: Settings) -> str | None:
    if settings.s3_bucket:  # one GET per rerun would slow every page; 5 s is soon enough for a promotion
        return _registry_served_s3(settings.s3_bucket, settings.s3_prefix, str(settings.data_dir),
                                   settings.model)
    return served_model_path(settings)


@st.cache_data(ttl=5, show_spinner=False)
def _registry_served_s3(bucket: str, prefix: str, data_dir: str, model: str | None) -> str | None:
    return served_model_path(Settings(model=model, data_dir=Path(data_dir), s3_bucket=bucket,
                                      s3_prefix=prefix))


def served_classifier() -> Classifier:
    return get_classifier(served_model())


def model_selector() -> None:
    """A sidebar chooser when there is more than one model to serve (the choice is per session).

    Its first entry follows the served model (registry or FACEXPR_MODEL), so a promotion or
    rollback reaches every session that has not picked another model."""
    from facexpr.model.classifier import list_models, newest_model

    models = [str(p) for p in list_models()]
    if not models:
        return
    served = registry_served(get_settings()) or str(newest_model())
    choices = [""] + [p for p in models if Path(p).resolve() != Path(served).resolve()]
    if len(choices) < 2:
        return
    # A short first entry (the sidebar cut "retrain-20261206-024207 (served"): the caption under
    # the chooser names the model that answers.
    st.selectbox("Model", choices, index=0, key="model_choice",
                 format_func=lambda p: Path(p).stem if p else "the served model",
                 help=f"The served model (now {Path(served).stem}), then the others in models/, newest "
                      "first. History records which model answered.")


def session_group() -> str:
    """An id for this browser session, stored with its corrections so a retrain holds one person's
    faces out together (sessions are the closest thing to a person the app knows)."""
    import uuid

    return st.session_state.setdefault("_correction_group", uuid.uuid4().hex[:16])


def classify_cached(data: bytes, mode: str = "auto") -> Prediction:
    """Predict once per (upload, faces mode, model) in this session: widget reruns reuse it."""
    classifier = served_classifier()
    sha = hashlib.sha256(data).hexdigest()  # hashed once: the prediction carries it on
    key = ("prediction", sha, mode, classifier.version)
    cached = st.session_state.get("_last_prediction")
    if cached is not None and cached[0] == key:
        return cached[1]
    prediction = predict_image(data, classifier, mode, image_sha256=sha)
    st.session_state["_last_prediction"] = (key, prediction)
    return prediction


@st.cache_resource(show_spinner=False)
def _open_history(data_dir: str, mongodb_uri: str | None, mongodb_db: str) -> History:
    """One history per process and settings (keyed by them, so a changed setting opens a new one)."""
    return open_history(Settings(data_dir=Path(data_dir), mongodb_uri=mongodb_uri, mongodb_db=mongodb_db))


def get_history() -> History:
    """The prediction history for the current settings (MongoDB or the embedded store).

    Raises HistoryError only when the embedded file cannot be opened; MongoDB
    connects on first use, so this never waits on the network.
    """
    settings = get_settings()
    return _open_history(str(settings.data_dir), settings.mongodb_uri, settings.mongodb_db)


@st.cache_data(ttl=60, show_spinner=False)
def relabel_counts(_settings: Settings, uri: str, since: datetime | None,
                   saves: tuple[str, ...]) -> RelabelSummary:
    """Relabeled images per class since SINCE. Cached: listing S3 on every rerun would be slow,
    and an outage would stall each one. URI and SAVES are in the cache key so a changed store and
    this session's own saves show at once."""
    return relabel_summary(_settings, since)


# ---------------------------------------------------------------- the history of this session's answers

def _record_key(prediction: Prediction, source: str) -> str:
    return f"_history_ids:{prediction.image_sha256}:{prediction.mode}:{prediction.model_version}:{source}"


# Streamlit's fast reruns start a page's next run while the last one may still be inside a slow
# history write (a database timing out), and stop the old run at its next session-state access.
# So the check and the write happen under this lock, and the ids go into a list put in the state
# *before* the write: filling it touches no session state, so a stopped run still keeps them.
# One lock per browser session, so a session waiting on a slow database never holds up the others.
_RECORD_LOCKS: dict[str, threading.Lock] = {}
_RECORD_LOCKS_GUARD = threading.Lock()


def _session_record_lock() -> threading.Lock:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    session = ctx.session_id if ctx is not None else ""
    with _RECORD_LOCKS_GUARD:
        return _RECORD_LOCKS.setdefault(session, threading.Lock())


def record_once(prediction: Prediction, source: str) -> str | None:
    """Record PREDICTION in the history once per session (widget reruns do not record it again).

    The one place a page records an answer: call it after the answer is on screen. Returns None
    or a warning to show; never raises.
    """
    key = _record_key(prediction, source)
    with _session_record_lock():
        slot = st.session_state.get(key)
        if slot:
            return None
        if slot is None:
            slot = st.session_state[key] = []
        ids, warning = record_safely(get_history, prediction, source)
        slot[:] = ids or []
    shadow_runner().submit(prediction, slot)  # after the answer is recorded: the shadow answers beside it
    return warning


def record_batch_once(predictions: list[Prediction], source: str) -> str | None:
    """Record a batch's PREDICTIONS in one history write, once per session, keeping each one's record
    ids where `note_answer` finds them (so a face answered from the Batch table gets its feedback).
    Returns None or a warning; never raises."""
    fresh = [p for p in predictions if st.session_state.get(_record_key(p, source)) is None]
    if not fresh:
        return None
    with _session_record_lock():
        slots = [st.session_state.setdefault(_record_key(p, source), []) for p in fresh]
        ids, warning = record_batch_safely(get_history, fresh, source)
        for prediction, slot, found in zip(fresh, slots, ids or [[] for _ in fresh], strict=True):
            slot[:] = found
            shadow_runner().submit(prediction, slot)
    return warning


@st.cache_resource(show_spinner=False)
def _shadow_runner(settings: Settings) -> ShadowRunner:  # one per process and settings
    return ShadowRunner(settings)


def shadow_runner() -> ShadowRunner:
    """This process's runner of the registry's shadow candidate (facexpr.serve.shadow)."""
    return _shadow_runner(get_settings())


def note_answer(prediction: Prediction, face_index: int, saved: SaveResult, source: str) -> str | None:
    """Attach a person's saved answer to the face's history record, recording the prediction
    first if that has not happened yet (so a record always precedes its feedback). Returns None
    or a warning; never raises."""
    warning = record_once(prediction, source)
    ids = st.session_state.get(_record_key(prediction, source))
    if not ids or not 0 <= face_index < len(ids):
        return warning or "The answer was saved, but the prediction is not in the history."
    return feedback_safely(get_history, ids[face_index], saved.label, saved.confirmed,
                           saved.object_key) or warning


@st.cache_data(ttl=3600, show_spinner=False)
def sweep_review(_settings: Settings, uri: str) -> int:
    """Drop review crops older than the queue's window, at most once an hour per process and store."""
    from facexpr.app.review import sweep
    from facexpr.core.errors import FacexprError

    try:
        return sweep(_settings)
    except FacexprError:
        return 0  # the store is down: try again next hour


def review_skipped() -> set[str]:
    """Record ids this session chose to skip in the review queue."""
    return st.session_state.setdefault("_review_skipped", set())


def keep_for_review_once(prediction: Prediction) -> str | None:
    """Keep this session's answer for the review queue once (widget reruns do not store again)."""
    from facexpr.app.review import keep_for_review

    key = ("_kept_for_review", prediction.image_sha256, prediction.mode)
    if prediction.no_face or st.session_state.get("_kept_for_review") == key:
        return None
    st.session_state["_kept_for_review"] = key
    return keep_for_review(get_settings(), prediction)


def keep_batch_for_review(predictions: list[Prediction]) -> str | None:
    """Keep a batch's faces for the review queue once per session (its unanswered faces are queued)."""
    from facexpr.app.review import keep_for_review

    key = ("_kept_batch_for_review", tuple(sorted(p.image_sha256 for p in predictions)))
    if st.session_state.get("_kept_batch_for_review") == key:
        return None
    st.session_state["_kept_batch_for_review"] = key
    notes = [note for p in predictions if (note := keep_for_review(get_settings(), p))]
    return notes[0] if notes else None


def confirm_or_correct(prediction: Prediction, face_index: int, original: bytes | None, source: str,
                       name: str, key_index: int | None) -> SaveResult | None:
    """The true-expression choice and its Save button for face FACE_INDEX of PREDICTION (Classify,
    Batch). The crop goes through the relabel path (store, else the outbox), one face one label (a
    second answer moves it), and the answer is noted on the face's history record. Widgets are
    keyed `NAME_label` / `NAME_save` with KEY_INDEX and the answer's id. Returns the saved answer."""
    from facexpr.core.errors import FacexprError
    from facexpr.core.labels import EXPRESSIONS, INDEX

    face = prediction.faces[face_index]
    saved_answers = st.session_state.setdefault("relabel_saved", {})  # (image, mode, face) → SaveResult
    slot = (prediction.image_sha256, prediction.mode, face_index)
    # A face too small to trust is not preset to the answer: nothing is confirmed without a choice.
    chosen = st.selectbox("True expression", EXPRESSIONS,
                          index=None if face.too_small else INDEX[face.expression],
                          format_func=str.capitalize, placeholder="Choose the true expression",
                          key=answer_key(f"{name}_label", prediction, key_index))
    saved = saved_answers.get(slot)
    verb = "Save" if chosen is None else "Confirm" if chosen == face.expression else "Save correction"
    clicked = st.button(verb, disabled=chosen is None, key=answer_key(f"{name}_save", prediction, key_index))
    # A double click adds nothing: only a label that differs from the one saved is stored.
    if clicked and chosen is not None and (saved is None or saved.label != chosen):
        try:
            saved = save_relabel(get_settings(), prediction, face_index, chosen, original, replaces=saved,
                                 group=session_group())
        except FacexprError as exc:
            st.error(f"Not saved: {exc}")
        else:
            saved_answers[slot] = saved
            history_note = note_answer(prediction, face_index, saved, source)
            if history_note:
                st.warning(history_note)
    if saved is not None:
        (st.warning if saved.queued else st.success)(saved.message())
    return saved


def model_changes_allowed() -> tuple[bool, str | None]:
    """Whether this session's person may retrain, promote, roll back or discard, and if not, why:
    anyone without FACEXPR_MODEL_ADMINS (a laptop), else only those signed-in emails (`st.login`)."""
    admins = get_settings().model_admins
    if not admins:
        return True, None
    user = st.user.to_dict()
    if not user.get("is_logged_in"):
        return False, ("On this deployment only the people named in FACEXPR_MODEL_ADMINS may retrain, "
                       "promote, roll back or discard. Sign in to continue.")
    email = str(user.get("email") or "").lower()
    if email not in admins:
        return False, (f"{email or 'This account'} may not change the served model here: ask one of the "
                       "people named in FACEXPR_MODEL_ADMINS.")
    return True, None


def sign_in_button() -> None:
    """Streamlit's login, where this deployment configures it (an [auth] section in secrets.toml)."""
    if "auth" in _secrets() and not st.user.to_dict().get("is_logged_in"):
        if st.button("Sign in", key="sign_in"):
            st.login()

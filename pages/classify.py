"""Classify: upload a headshot → the gray image with faces marked, the expression, the bars."""

import streamlit as st

from facexpr.app.charts import draw_faces, probability_chart
from facexpr.app.ui import (
    Photo,
    answer_key,
    classify_cached,
    confirm_or_correct,
    forget_photo,
    get_settings,
    keep_for_review_once,
    record_once,
    relabel_counts,
    remember_photo,
    remembered_photo,
    second_column_first_when_stacked,
    served_classifier,
    through_the_entry_script,
    upload_limits,
)
from facexpr.core.errors import FacexprError
from facexpr.model.explain import explain, overlay
from facexpr.photo.imaging import check_upload_name

through_the_entry_script()  # a deep link as the first request (facexpr.app.ui)
st.title("Classify a headshot")
st.caption("Upload a black-and-white or colour photo, or take one with your camera. facexpr finds each "
           "face, shows it as the model sees it (gray), and tells which of seven expressions it shows.")

use_camera = st.toggle("Use the camera instead", key="use_camera")
if use_camera:
    uploaded, source = st.camera_input("Take a photo", key="camera", on_change=forget_photo), "camera"
else:
    # Every file type is let through: one we cannot read is refused below with the reason in words
    # (the uploader's own refusal is a red file chip with the reason only on hover).
    uploaded, source = st.file_uploader("Headshot photo", key="upload", on_change=forget_photo), "upload"
    st.caption(upload_limits())
if uploaded is not None:
    photo = Photo(uploaded.name, uploaded.getvalue(), source, uploaded.file_id)
else:  # back from another page: the widget forgot the photo, this session did not
    photo = remembered_photo(source)
    if photo is None:
        st.info("Take a photo to classify." if use_camera else "Choose a photo to classify.")
        st.stop()
    shown, clear = st.columns([4, 1], vertical_alignment="center")
    shown.caption(f"Showing your last photo, **{photo.name}**: choose another above, or clear it.")
    if clear.button("Clear", key="forget_photo"):
        forget_photo()
        st.rerun()

data = photo.data
whole_key = f"whole_image_{photo.file_id}"
mode = "whole" if st.session_state.get(whole_key) else "auto"
try:
    if source == "upload":
        check_upload_name(photo.name)
    with st.spinner("Finding faces and reading expressions…"):
        prediction = classify_cached(data, mode)
except FacexprError as exc:
    st.error(f"{photo.name}: {exc}")
    st.stop()
remember_photo(photo)

result = st.container(key="classify_result")
second_column_first_when_stacked("classify_result")  # on a phone, the answer before the photo
image_col, answer_col = result.columns([1, 1], gap="large")
with image_col:
    st.image(draw_faces(prediction.gray, [f.box for f in prediction.faces]),
             # Named: a file the uploader refuses (over its size cap) never reaches this page, so the
             # answer on screen must say which file it belongs to.
             caption=f"{photo.name}: what the model sees, the gray image with its faces marked",
             width="stretch")
    st.caption(f"{prediction.latency_ms['total']:.0f} ms · model {prediction.model_version}")

with answer_col:
    if prediction.no_face:
        st.warning("No face was found in this photo. Try a straight-on headshot, or classify the "
                   "whole image as if it were one face.")
        # Recorded too: no-face images are the detector's failure rate on Model health.
        history_note = record_once(prediction, source)
        if history_note:
            st.warning(history_note)
        if st.button("Classify the whole image", key="classify_whole"):
            st.session_state[whole_key] = True
            st.rerun()
        st.stop()
    if prediction.mode == "whole":
        st.info("No face was found, so the centre of the whole image was classified.")
    many = len(prediction.faces) > 1
    settings = get_settings()
    saved_answers = st.session_state.setdefault("relabel_saved", {})  # (image, mode, face) → SaveResult
    if many:
        st.write(f"**{len(prediction.faces)} faces** found, numbered on the image.")
    for i, face in enumerate(prediction.faces):
        suffix, face_index = (f"_{i}", i) if many else ("", None)
        with st.container(border=True):
            head, crop = st.columns([4, 1])
            head.subheader(("Face " + str(i + 1) + ": " if many else "") + face.headline())
            if face.unsure:  # the threshold is the served model's own (its card)
                head.write(f"confidence **{face.confidence:.0%}**: the model is unsure. Below "
                           f"{served_classifier().unsure_below:.0%} its answers on development photos were "
                           f"wrong more often than right; *{face.runner_up}* is its second choice.")
            else:
                head.write(f"confidence **{face.confidence:.0%}**")
            crop.image(face.crop, caption="48×48 crop", width=72)
            st.altair_chart(probability_chart(face.probabilities), width="stretch")
            # keyed by the answer: a switch left on for the last photo must not show this one's heatmap
            if st.toggle("Show what drove this answer", key=answer_key("explain", prediction, face_index)):
                heat, method = explain(served_classifier(), face.crop)  # only when asked
                st.image(overlay(face.crop, heat), width=192,
                         caption=f"Regions that raised “{face.expression}” ({method}): hotter is stronger")
            if face.too_small:
                st.warning(f"Too small to trust: this face is {face.box.w}×{face.box.h} pixels, and the "
                           "model reads 48×48, so most of what it saw was filled in. Choose the true "
                           "expression yourself before saving.")
            confirm_or_correct(prediction, i, data, source, "relabel", face_index)
    since = served_classifier().card.trained_at
    summary = relabel_counts(settings, settings.relabeled_uri, since,
                             tuple(r.key for r in saved_answers.values()))
    gathered = " · ".join(f"{name} {n}" for name, n in summary.counts.items())
    trained = f"{since:%Y-%m-%d %H:%M}" if since else "unknown"
    st.caption(f"Relabeled since this model was trained ({trained}): "
               f"{gathered if summary.total else 'none yet'}"
               + (f" · {summary.pending} waiting in the outbox" if summary.pending else "")
               + (f" · counts unavailable: {summary.error}" if summary.error else ""))

# Recorded only now, after the answer is on screen, so the database never delays it (once per session).
history_note = record_once(prediction, source)
if history_note:
    st.warning(history_note)
review_note = keep_for_review_once(prediction)  # so the Review page can ask people later
if review_note:
    st.caption(review_note)

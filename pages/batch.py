"""Batch: many photos at once → a table (face crop, file, face, expression, confidence) + CSV, and
any face confirmed or corrected from it; the faces nobody answers go to the Review queue."""

import hashlib

import altair as alt
import streamlit as st

from facexpr.app.ui import (
    confirm_or_correct,
    keep_batch_for_review,
    record_batch_once,
    served_classifier,
    through_the_entry_script,
    upload_limits,
)
from facexpr.serve.batch import classify_files, face_rows, faces_table, plural, results_table, summary, to_csv

through_the_entry_script()  # a deep link as the first request (facexpr.app.ui)
st.title("Batch")
st.caption("Classify many photos at once. Files that cannot be read are listed with the reason; "
           "the rest are still classified.")

files = st.file_uploader("Photos", accept_multiple_files=True, key="batch_upload")
st.caption(upload_limits() + ", each")
if not files:
    st.info("Choose several photos (or face crops) to classify them together.")
    st.stop()

batch_id = tuple(f.file_id for f in files)
if st.session_state.get("batch_id") != batch_id:
    progress = st.progress(0.0, text="Starting…")
    items = classify_files(((f.name, f.getvalue()) for f in files), served_classifier(),
                           on_progress=lambda n, name: progress.progress(n / len(files),
                                                                         text=f"{n}/{len(files)}: {name}"))
    progress.empty()
    st.session_state.update(batch_id=batch_id, batch_items=items)
items = st.session_state["batch_items"]
batch_key = hashlib.sha256("\n".join(batch_id).encode()).hexdigest()[:12]  # this batch's widgets

table = results_table(items)
faces = int(table["face"].notna().sum())
bad = [(i.name, i.error) for i in items if i.error]
no_face = [i.name for i in items if not i.error and i.note]
st.write(f"**{plural(len(items), 'file')}**, {plural(faces, 'face')}"
         + (f", {len(bad)} could not be read" if bad else "")
         + (f", {plural(len(no_face), 'photo')} without a face" if no_face else ""))
for name, error in bad:
    st.error(f"{name}: {error}")
if no_face:
    st.warning("No face found in " + ", ".join(no_face) + ".")

table_slot = st.empty()  # filled below, once this run's answer (if any) is saved
st.altair_chart(alt.Chart(summary(table)).mark_bar(color="#e4572e").encode(
    x=alt.X("faces:Q", title="faces", axis=alt.Axis(tickMinStep=1, format="d")),
    y=alt.Y("expression:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False)),
).properties(height=210), width="stretch")
st.download_button("Download CSV", to_csv(table), file_name="facexpr-batch.csv", mime="text/csv",
                   key="batch_csv", help="one row per face, with all seven probabilities, the model "
                                         "version and the time (UTC)")

rows = face_rows(items)
if rows:
    st.subheader("Confirm or correct")
    st.caption("Answers go where the Classify page's go: the face's crop under its true expression, "
               "to train the next model. Faces nobody answers here wait in the Review queue.")
    row = st.selectbox("Face", range(len(rows)), key=f"batch_face-{batch_key}",
                       format_func=lambda r: f"{rows[r].file} · face {rows[r].face_index + 1}: "
                                             f"{rows[r].expression}")
    chosen = rows[row]
    with st.container(border=True):
        crop, answer = st.columns([1, 4])
        crop.image(chosen.prediction.faces[chosen.face_index].crop, caption="48×48 crop", width=96)
        with answer:
            confirm_or_correct(chosen.prediction, chosen.face_index, files[chosen.item].getvalue(), "batch",
                               "batch", chosen.face_index)

# Every row shown at once (the table grows with the page), each face large enough to read.
saved = {k: v.label for k, v in st.session_state.get("relabel_saved", {}).items()}
table_slot.dataframe(faces_table(items, saved), hide_index=True, width="stretch", height="content",
                     row_height=72, column_config={
    "crop": st.column_config.ImageColumn("crop", width="small", help="the 48×48 face the model saw"),
    "face": st.column_config.NumberColumn("face", format="%d", help="numbered left to right"),
    "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0,
                                                  format="percent"),
})

# Last, so the history and the review store never hold the answers up (once per batch and session).
answered = [i.prediction for i in items if i.prediction is not None]
for note in (record_batch_once(answered, "batch"), keep_batch_for_review(answered)):
    if note:
        st.warning(note)

"""Batch: many photos at once → a table (face crop, file, face, expression, confidence) + CSV."""

import altair as alt
import streamlit as st

from facexpr.app.ui import get_history, served_classifier, through_the_entry_script, upload_limits
from facexpr.serve.batch import classify_files, faces_table, plural, results_table, summary, to_csv
from facexpr.storage.history import record_batch_safely

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
    st.session_state.update(batch_id=batch_id, batch_items=items, batch_recorded=False)
items = st.session_state["batch_items"]

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

# Every row shown at once (the table grows with the page), each face large enough to read.
st.dataframe(faces_table(items), hide_index=True, width="stretch", height="content", row_height=72,
             column_config={
    "crop": st.column_config.ImageColumn("crop", width="small", help="the 48×48 face the model saw"),
    "face": st.column_config.NumberColumn("face", format="%d", help="numbered left to right"),
    "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0,
                                                  format="percent"),
})
st.altair_chart(alt.Chart(summary(table)).mark_bar(color="#e4572e").encode(
    x=alt.X("faces:Q", title="faces", axis=alt.Axis(tickMinStep=1, format="d")),
    y=alt.Y("expression:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False)),
).properties(height=210), width="stretch")
st.download_button("Download CSV", to_csv(table), file_name="facexpr-batch.csv", mime="text/csv",
                   key="batch_csv", help="one row per face, with all seven probabilities, the model "
                                         "version and the time (UTC)")

if not st.session_state["batch_recorded"]:  # last: the history never holds the answers up
    st.session_state["batch_recorded"] = True
    answered = [i.prediction for i in items if i.prediction is not None]
    warning = record_batch_safely(get_history, answered, "batch")
    if warning:
        st.warning(warning)

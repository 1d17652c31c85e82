"""Batch: many photos at once → a table (thumbnail, file, faces, expression, confidence) + CSV."""

import altair as alt
import streamlit as st

from facexpr.batch import classify_files, results_table, summary, thumbnails, to_csv
from facexpr.history import record_batch_safely
from facexpr.ui import UPLOAD_TYPES, get_history, served_classifier

st.title("Batch")
st.caption("Classify many photos at once. Files that cannot be read are listed with the reason; "
           "the rest are still classified.")

files = st.file_uploader("Photos", type=UPLOAD_TYPES, accept_multiple_files=True, key="batch_upload")
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
st.write(f"**{len(items)} files**, {faces} faces" + (f", {len(bad)} could not be read" if bad else ""))
for name, error in bad:
    st.error(f"{name}: {error}")

shown = table.assign(thumbnail=thumbnails(items))[["thumbnail", "file", "face", "expression", "confidence",
                                                   "error"]]
st.dataframe(shown, hide_index=True, width="stretch", column_config={
    "thumbnail": st.column_config.ImageColumn("face", width="small"),
    "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0,
                                                  format="percent"),
})
st.altair_chart(alt.Chart(summary(table)).mark_bar(color="#e4572e").encode(
    x=alt.X("faces:Q", title="faces", axis=alt.Axis(tickMinStep=1)),
    y=alt.Y("expression:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False)),
).properties(height=210), width="stretch")
st.download_button("Download CSV", to_csv(table), file_name="facexpr-batch.csv", mime="text/csv",
                   key="batch_csv")

if not st.session_state["batch_recorded"]:  # last: the history never holds the answers up
    st.session_state["batch_recorded"] = True
    answered = [i.prediction for i in items if i.prediction is not None]
    warning = record_batch_safely(get_history, answered, "batch")
    if warning:
        st.warning(warning)

"""Review: the recent answers nobody has answered yet, most useful first; one click or key labels one."""

import streamlit as st

from facexpr.app.charts import draw_faces, probability_chart
from facexpr.app.review import REVIEW_DAYS, label_item, load_crop, load_photo, review_queue, review_uri
from facexpr.app.ui import (
    get_history,
    get_settings,
    review_skipped,
    session_group,
    sweep_review,
    through_the_entry_script,
)
from facexpr.core.errors import FacexprError
from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import Box
from facexpr.photo.imaging import decode_gray

through_the_entry_script()  # a deep link as the first request (facexpr.app.ui)
st.title("Review")
st.caption(f"Answers from the last {REVIEW_DAYS} days that nobody has confirmed or corrected yet: first "
           "where the two latest models disagree, then the least confident. Each label you give is stored "
           "like a correction on the Classify page and teaches the next model.")

settings = get_settings()
sweep_review(settings, review_uri(settings))
try:
    queue = review_queue(get_history(), settings, skip=review_skipped())
except FacexprError as exc:
    st.warning(f"The review queue cannot be read now: {exc}")
    st.stop()

done = st.session_state.get("review_last")
if done:
    (st.warning if done.queued else st.success)(done.message(how_to_change=False))  # changed below
    if st.session_state.get("review_last_warning"):
        st.warning(st.session_state["review_last_warning"])
    # A mistyped key is undone here: the last face's answer can be changed until the next one is given.
    last_item, last_crop = st.session_state["review_last_face"]
    pick, change = st.columns([3, 1], vertical_alignment="bottom")
    other = pick.selectbox("Change the last answer to", [e for e in EXPRESSIONS if e != done.label],
                           index=None, format_func=str.capitalize, placeholder="another expression",
                           key=f"review_change-{last_item.record_id}")
    if change.button("Change", key=f"review_change_save-{last_item.record_id}", disabled=other is None):
        try:
            saved, warning = label_item(settings, get_history(), last_item, other, group=session_group(),
                                        crop=last_crop, replaces=done)
        except FacexprError as exc:
            st.error(f"Not changed: {exc}")
        else:
            st.session_state["review_last"], st.session_state["review_last_warning"] = saved, warning
            st.rerun()
if not queue:
    st.info("Nothing to review: every recent answer kept for review has been answered.")
    st.stop()

item = queue[0]
st.write(f"**{len(queue)}** face(s) waiting · this one answered {item.ts:%Y-%m-%d %H:%M} UTC")
photo_col, answer_col = st.columns([1, 1], gap="large")
with photo_col:
    photo = load_photo(settings, item)
    if photo is not None:
        try:
            boxes = [Box(*photo[1])] if len(photo[1]) == 4 else []
            st.image(draw_faces(decode_gray(photo[0]), boxes), caption="The photo, this face marked",
                     width="stretch")
        except FacexprError:
            st.caption("The photo cannot be shown.")
with answer_col:
    head, crop = st.columns([4, 1])
    head.subheader(item.expression.capitalize())
    head.write(f"confidence **{item.confidence:.0%}** · model {item.model_version}")
    if item.other:
        head.write(f"The previous model ({item.other[0]}) said **{item.other[1]}**.")
    crop.image(load_crop(settings, item), caption="48×48 crop", width=72)
    st.altair_chart(probability_chart(item.probabilities), width="stretch")
    st.write("What does this face show? (keys 1–7)")
    columns = st.columns(3)  # four across cut "Surprise 6" short beside the photo
    # Keyed by the face: the clicked button's focus and highlight must not carry to the next face.
    for n, name in enumerate(EXPRESSIONS):
        if columns[n % 3].button(name.capitalize(), key=f"review_label_{name}-{item.record_id}",
                                 shortcut=str(n + 1), width="stretch"):
            try:
                crop = load_crop(settings, item)  # kept, so the answer can be changed after the face leaves
                saved, warning = label_item(settings, get_history(), item, name, group=session_group())
            except FacexprError as exc:
                st.error(f"Not saved: {exc}")
            else:
                st.session_state["review_last"] = saved
                st.session_state["review_last_warning"] = warning
                st.session_state["review_last_face"] = (item, crop)
                st.rerun()
    if columns[len(EXPRESSIONS) % 3].button("Skip", key=f"review_skip-{item.record_id}", width="stretch"):
        review_skipped().add(item.record_id)
        st.rerun()

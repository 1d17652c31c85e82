"""facexpr app entry: navigation over the pages and the shared sidebar."""

from pathlib import Path

import streamlit as st

from facexpr.app.ui import close_sidebar_after_navigation, get_settings, model_selector, served_classifier
from facexpr.core.errors import FacexprError

# Material icons, drawn by Streamlit's own icon font: emoji render as empty boxes where the
# machine has no emoji font.
st.set_page_config(page_title="facexpr", page_icon=":material/mood:", layout="wide")

page = st.navigation([
    st.Page("pages/classify.py", title="Classify", icon=":material/mood:", default=True),
    st.Page("pages/batch.py", title="Batch", icon=":material/photo_library:"),
    st.Page("pages/model_health.py", title="Model health", icon=":material/monitoring:"),
    st.Page("pages/review.py", title="Review", icon=":material/rate_review:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
])

with st.sidebar:
    settings = get_settings()
    model_selector()
    try:
        classifier = served_classifier()
        accuracy = classifier.card.val.accuracy
        st.caption(f"Model **{classifier.version}**"
                   + (f" · val accuracy {accuracy:.1%}" if accuracy is not None else ""))
    except FacexprError as exc:
        st.error(str(exc))
    relabeled = Path(settings.relabeled_uri)
    # The folder's last two names (a full path wrapped over four lines of the sidebar); all of it on hover.
    st.caption("Images: " + (f"S3 bucket `{settings.s3_bucket}`" if settings.s3_bucket
                             else f"local folder `…/{relabeled.parent.name}/{relabeled.name}`"),
               help=None if settings.s3_bucket else f"Corrections are stored under {relabeled}")
    st.caption("History: " + ("MongoDB" if settings.mongodb_uri else "embedded database"))
    close_sidebar_after_navigation(page.url_path)

page.run()

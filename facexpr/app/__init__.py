"""The Streamlit app's logic: session state helpers, charts, the review queue, the retrain job.

Imports every layer below; only facexpr.app.ui and the pages import Streamlit.
"""

"""Headstart's web app: `streamlit run app.py`.

One navigation over the pages in pages/ (Home, then the steps in order), listed once in pages/_common.PAGES. Each
page is a short script; what they share (the job manager, cross-page state, error sentences) is in pages/_common.py.
What a person chose is restored after a refresh or in a second tab, and saved after every run of a page.
"""

import streamlit as st

st.set_page_config(page_title="Headstart", page_icon=":material/model_training:", layout="wide")

from pages import _common as ui  # noqa: E402 - after the page config, which styles everything below

ui.restore_choices()
try:
    ui.navigation().run()
finally:  # also when the page reruns or stops itself
    ui.remember_choices()

"""Headstart's web app: `streamlit run app.py`.

One navigation over the pages in pages/ (Home, then the steps in order). Each page is a short script; what they share
(the job manager, cross-page state, error sentences) is in pages/_common.py.
"""

import streamlit as st

st.set_page_config(page_title="Headstart", page_icon=":material/model_training:", layout="wide")

pages = {
    "": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Steps": [
        st.Page("pages/data.py", title="1. Data", icon=":material/photo_library:"),
        st.Page("pages/model.py", title="2. Model", icon=":material/account_tree:"),
        st.Page("pages/train.py", title="3. Train", icon=":material/model_training:"),
        st.Page("pages/evaluate.py", title="4. Evaluate", icon=":material/fact_check:"),
        st.Page("pages/predict.py", title="5. Predict", icon=":material/image_search:"),
        st.Page("pages/export.py", title="6. Export", icon=":material/download:"),
    ],
}
st.navigation(pages).run()

"""Predict: drop new pictures and get the model's label for each, with how sure it is."""

import streamlit as st

from pages import _common as ui
from tl_core.images import IMAGE_EXTENSIONS, UnusableImage, open_rgb
from tl_core.plots import top_k_figure

ui.header("5. Predict", "Give the trained model new pictures; it answers with a label and its confidence.")

run = ui.pick_run("predict_run")
if run is None:
    ui.needs("No trained model yet: train one first.", "train", "Go to 3. Train")
    st.stop()

st.caption("Classes it knows: " + ", ".join(run.class_names))
files = st.file_uploader(
    "New pictures",
    type=[e.lstrip(".") for e in IMAGE_EXTENSIONS],
    accept_multiple_files=True,
    key="predict_files",
)
if not files:
    st.info("Drop one or more pictures above. The model answers with one of its classes even for something else.")
    st.stop()

predictor = ui.attempt("The model could not be loaded", ui.load_predictor, run.run_dir)
if predictor is None:
    st.stop()

images, names = [], []
for f in files:
    try:
        images.append(open_rgb(f))
        names.append(f.name)
    except UnusableImage as exc:
        st.warning(f"'{f.name}' is left out: {exc}.")
if not images:
    st.stop()

BATCH = 32  # pictures per forward pass: memory stays small however many are dropped
results = []
for start in range(0, len(images), BATCH):
    chunk = ui.attempt("The pictures could not be labelled", predictor.predict_images, images[start : start + BATCH])
    if chunk is None:
        st.stop()
    results += chunk

show_heat = st.toggle(
    "Show where the model looked",
    value=True,
    key="predict_heat",
    help="Grad-CAM: warm colours mark the parts of the picture that pushed the model towards its answer.",
)
for index, (name, image, result) in enumerate(zip(names, images, results, strict=True)):
    left, middle, right = st.columns([1, 1, 2])
    left.image(image, caption=name, width=160)
    if show_heat:
        with middle, ui.user_errors("The heat map could not be drawn"):
            middle.image(ui.heat_map(predictor, image), caption=f"evidence for '{result['label']}'", width=160)
    with right:
        st.markdown(f"**{ui.plain(result['label'])}** · {result['confidence']:.1%} confident")
        if result["confidence"] < 0.5:
            st.caption(
                "Unsure: the model spreads its answer over several classes. Pictures unlike the training ones, or a "
                "model trained briefly, do this; more pictures or epochs usually help."
            )
        st.plotly_chart(top_k_figure(result["top_k"]), key=f"predict_topk_{index}", config={"displayModeBar": False})
if len(results) > 1:
    st.dataframe(
        [
            {"picture": n, "label": r["label"], "confidence": round(r["confidence"], 4)}
            for n, r in zip(names, results, strict=True)
        ],
        hide_index=True,
        key="predict_table",
    )

ui.next_step("take the model away.", "export", "Go to 6. Export")

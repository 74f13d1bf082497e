"""Model: the pretrained backbones Headstart knows, which of them can be had on this machine, and a recommendation."""

import streamlit as st

from pages import _common as ui
from tl_core import uploads
from tl_core.backbones import CATALOGUE, WEIGHT_FILE_SUFFIXES, label_for
from tl_core.speed import measure_speed, remember_speed, remembered_speeds

ui.header(
    "2. Model",
    "Pick the pretrained network (the 'backbone') that already knows how to see; Headstart teaches it your classes.",
)

on_gpu = ui.device_type() == "cuda"
measured = remembered_speeds()
rows = []
for spec in CATALOGUE.values():
    speed = measured.get(spec.name, {})
    rows.append(
        {
            "model": spec.label,
            "timm name": spec.name,
            "family": spec.family,
            "parameters (M)": spec.params_m,
            "input (px)": spec.input_size,
            "ImageNet top-1 (%)": spec.imagenet_top1,
            "speed here": "fast (GPU)" if on_gpu else ("fine on CPU" if spec.cpu_friendly else "slow on CPU"),
            "training img/s here": speed.get("training_images_per_second"),
            "predicting img/s here": speed.get("inference_images_per_second"),
            "weights here": ui.weights_here(spec.name),
            "about": spec.description,
        }
    )
st.dataframe(
    rows,
    hide_index=True,
    height=35 * (len(rows) + 1) + 3,  # every backbone visible without scrolling
    key="model_catalogue",
    column_config={
        "parameters (M)": st.column_config.NumberColumn(
            help="Millions of numbers the network learned; bigger is slower."
        ),
        "ImageNet top-1 (%)": st.column_config.NumberColumn(
            help="How often it named the right one of 1000 everyday classes: a rough guide to how well it sees."
        ),
        "training img/s here": st.column_config.NumberColumn(
            help="Measured on this machine: pictures per second when every layer trains (forward, backward, update) "
            "at the backbone's input size. Empty until measured (button below)."
        ),
        "predicting img/s here": st.column_config.NumberColumn(
            help="Measured on this machine: pictures per second when only predicting. Feature extraction runs at "
            "about this speed, once per data set."
        ),
        "weights here": st.column_config.TextColumn(
            help="Where the pretrained weights would come from: a package installed with Headstart (works offline), "
            "the local download cache, or the model hub (needs the internet)."
        ),
    },
)
st.caption("Click a column name to sort. Device: " + ui.device_description() + ".")
if st.button(
    "Measure speed on this machine",
    key="model_measure",
    icon=":material/speed:",
    help="Times each backbone for a second or two on this device (random weights: speed does not depend on them).",
):
    progress = st.progress(0.0, text="Measuring...")
    for i, name in enumerate(CATALOGUE, start=1):
        progress.progress((i - 1) / len(CATALOGUE), text=f"Measuring {label_for(name)} ({i} of {len(CATALOGUE)})...")
        with ui.user_errors(f"{label_for(name)} could not be measured"):
            remember_speed(measure_speed(name))
    st.rerun()

recommended, why = ui.recommend_backbone()
st.success(f"**Recommended here: {label_for(recommended)}**: {why}", icon=":material/thumb_up:")

names = list(CATALOGUE)
current = ui.chosen_backbone()
choice = st.selectbox(
    "Backbone to train",
    names,
    index=names.index(current) if current in names else 0,
    format_func=lambda n: f"{label_for(n)} ({ui.weights_here(n)})",
    key="model_backbone",
)
st.session_state[ui.BACKBONE] = choice

WEIGHT_LABELS = {
    "auto": "Automatic (the hub or its cache if possible, else the offline package)",
    "offline": "Offline package",
    "hub": "Model hub",
    "none": "No pretraining (from scratch: for comparison only)",
    "file": "A weights file of my own",
}
sources = ui.weight_sources(choice)
options = ["auto", "offline", "hub", "none", "file"]
current_weights = ui.chosen_weights()
current_key = current_weights if current_weights in options else "file"
weights_key = st.radio(
    "Pretrained weights",
    options,
    index=options.index(current_key),
    format_func=WEIGHT_LABELS.get,
    key="model_weights",
)
if weights_key == "offline" and not sources["offline"]:
    st.warning(f"No offline package ships weights for {label_for(choice)}. Pick EfficientNet-Lite0, or Automatic.")
if weights_key == "hub" and not (sources["hub"] or sources["hub_cache"]):
    st.warning("The model hub cannot be reached from here and these weights are not in the local cache.")
if weights_key == "auto" and not ui.has_pretrained(choice):
    st.warning(
        f"No pretrained weights for {label_for(choice)} can be had on this machine: training would fail. "
        "Pick a backbone whose 'weights here' is not 'none here'."
    )
if weights_key == "none":
    st.info(
        "From scratch, the network knows nothing yet: expect far lower accuracy. Useful to see what pretraining buys."
    )

if weights_key == "file":
    upload = st.file_uploader(
        "Weights file (" + ", ".join(WEIGHT_FILE_SUFFIXES) + ")",
        type=[s.lstrip(".") for s in WEIGHT_FILE_SUFFIXES],
        key="model_weights_file",
    )
    if upload is not None:
        with ui.user_errors("The weights file could not be saved"):
            suffix = "." + upload.name.rsplit(".", 1)[-1].lower()
            path = uploads.store_file(upload.getvalue(), "weights", suffix)
            st.session_state[ui.WEIGHTS] = str(path)
    if current_weights not in options:
        st.caption(f"Using the weights file `{current_weights}`; it must have been made for {label_for(choice)}.")
    else:
        st.caption(f"Upload a file made for {label_for(choice)} (timm or compatible names).")
else:
    st.session_state[ui.WEIGHTS] = weights_key

ui.next_step("choose how much of the network to retrain, and start.", "train", "Go to 3. Train")

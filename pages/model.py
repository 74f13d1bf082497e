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

recommended, why = ui.recommend_backbone()
st.success(f"**Recommended here: {label_for(recommended)}**: {why}", icon=":material/thumb_up:")

on_gpu = ui.device_type() == "cuda"
measured = remembered_speeds()


def time_for_1000(images_per_second: float | None) -> str:
    return ui.duration(1000 / images_per_second) if images_per_second else "not measured yet"


rows = []
for spec in CATALOGUE.values():
    speed = measured.get(spec.name, {})
    rows.append(
        {
            "model": spec.label + (" (recommended)" if spec.name == recommended else ""),
            "usable here": ui.usable_here(spec.name),
            "about": spec.description,
            "suits": "this GPU" if on_gpu else ("this CPU" if spec.cpu_friendly else "a GPU (slow on this CPU)"),
            "Quick model, 1,000 pictures": time_for_1000(speed.get("inference_images_per_second")),
            "fine-tune all, 1,000 pictures per epoch": time_for_1000(speed.get("training_images_per_second")),
            "how well it sees (%)": spec.imagenet_top1,
            "size (M parameters)": spec.params_m,
            "input (px)": spec.input_size,
            "timm name": spec.name,
        }
    )
rows.sort(key=lambda r: (r["timm name"] != recommended, not r["usable here"].startswith("yes")))
st.dataframe(
    rows,
    hide_index=True,
    height=35 * (len(rows) + 1) + 3,  # every backbone visible without scrolling
    key="model_catalogue",
    column_config={
        "usable here": st.column_config.TextColumn(
            help="Whether its pretrained weights can be had on this computer, and from where: a package installed "
            "with Headstart (works offline), the local download cache, or the model hub (needs the internet)."
        ),
        "Quick model, 1,000 pictures": st.column_config.TextColumn(
            help="Measured on this computer: how long the pretrained network takes to look at 1,000 pictures once, "
            "which is nearly all a Quick model (feature extraction) costs."
        ),
        "fine-tune all, 1,000 pictures per epoch": st.column_config.TextColumn(
            help="Measured on this computer: one pass of training with every layer learning, per 1,000 pictures."
        ),
        "how well it sees (%)": st.column_config.NumberColumn(
            help="ImageNet top-1: how often it named the right one of 1,000 everyday classes. A rough guide to how "
            "well its features transfer to your pictures."
        ),
        "size (M parameters)": st.column_config.NumberColumn(
            help="Millions of numbers the network learned; bigger is slower."
        ),
        "timm name": st.column_config.TextColumn(help="Its name in timm, the library the networks come from."),
    },
)
st.caption(
    "Click a column name to sort. Times are measured on this computer (" + ui.device_description() + ") when you "
    "press the button below: a second or two per network."
)
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

names = list(CATALOGUE)
current = ui.chosen_backbone()
choice = st.selectbox(
    "Backbone to train",
    names,
    index=names.index(current) if current in names else 0,
    format_func=lambda n: f"{label_for(n)} ({ui.usable_here(n)})",
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
        "Pick a backbone that is 'usable here' in the table above."
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

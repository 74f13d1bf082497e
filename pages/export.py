"""Export: the trained model as one zip (weights, labels, preprocessing, a predict script, a model card)."""

import zipfile
from pathlib import Path

import streamlit as st

from pages import _common as ui
from tl_core import settings
from tl_core.export import export_bundle

ui.header("6. Export", "Download the trained model to use it outside Headstart: one zip with everything it needs.")

run = ui.pick_run("export_run")
if run is None:
    ui.needs("No trained model yet: train one first.", "train", "Go to 3. Train")
    st.stop()


@st.cache_data(show_spinner="Packing the model...", max_entries=64)
def bundle(run_dir: str, weights_mtime: float) -> str:
    """The bundle's path under data/exports/, made once per run (and again if the weights change)."""
    out = settings.data_dir().resolve() / "exports" / f"{Path(run_dir).name}.zip"
    return str(export_bundle(run_dir, out))


weights = run.run_dir / "model.safetensors"
made = ui.attempt("The model could not be packed", bundle, str(run.run_dir), weights.stat().st_mtime)
if made is not None and not Path(made).exists():  # removed from disk since: pack it again
    bundle.clear()
    made = ui.attempt("The model could not be packed", bundle, str(run.run_dir), weights.stat().st_mtime)
if made is None:
    st.stop()
path = Path(made)

st.download_button(
    f"Download the model ({path.stat().st_size / 1024**2:.1f} MB)",
    data=path.read_bytes,  # read only when clicked, not on every rerun
    file_name=f"headstart-{run.id}.zip",
    mime="application/zip",
    type="primary",
    icon=":material/download:",
    key="export_download",
    on_click="ignore",
)
with zipfile.ZipFile(path) as zf:
    listing = [{"file": i.filename, "size (KB)": round(i.file_size / 1024, 1)} for i in zf.infolist()]
    card = zf.read("README.md").decode("utf-8")
WHAT = {
    "model.safetensors": "the trained weights",
    "labels.json": "the class names, in the model's order",
    "preprocessing.json": "how to prepare a picture (size, crop, normalisation)",
    "predict.py": "a small script: python predict.py photo.jpg",
    "requirements.txt": "what predict.py needs (torch, timm, pillow, safetensors)",
    "summary.json": "how the training went",
    "README.md": "the model card: classes, data, accuracy, limits",
}
st.dataframe(
    [{**row, "what it is": WHAT.get(row["file"], "")} for row in listing], hide_index=True, key="export_listing"
)
with st.expander("Model card (README.md in the zip)", expanded=True):
    st.markdown(card)

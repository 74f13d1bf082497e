"""Export: the trained model as one zip (weights, ONNX fp32 and int8, labels, preprocessing, two predict scripts, a
model card), checked at export to give the app's answers."""

import json
import zipfile
from pathlib import Path

import streamlit as st

from pages import _common as ui
from tl_core import settings
from tl_core.export import export_bundle
from tl_core.operating_point import FILE as RULE_FILE

ui.header("6. Export", "Download the trained model to use it outside Headstart: one zip with everything it needs.")

run = ui.pick_run("export_run")
if run is None:
    ui.needs("No trained model yet: train one first.", "train", "Go to 3. Train")
    st.stop()


@st.cache_data(show_spinner="Packing the model: ONNX and int8 copies, each checked against it...", max_entries=64)
def bundle(run_dir: str, weights_mtime: float, rule_mtime: float) -> str:
    """The bundle's path under data/exports/, made once per run (and again if its weights or operating point change)."""
    out = settings.data_dir().resolve() / "exports" / f"{Path(run_dir).name}.zip"
    return str(export_bundle(run_dir, out))


weights, rule = run.run_dir / "model.safetensors", run.run_dir / RULE_FILE
stamps = (weights.stat().st_mtime, rule.stat().st_mtime if rule.exists() else 0.0)
made = ui.attempt("The model could not be packed", bundle, str(run.run_dir), *stamps)
if made is not None and not Path(made).exists():  # removed from disk since: pack it again
    bundle.clear()
    made = ui.attempt("The model could not be packed", bundle, str(run.run_dir), *stamps)
if made is None:
    st.stop()
path = Path(made)

st.download_button(
    f"Download the model ({ui.size(path.stat().st_size)})",
    data=path.read_bytes,  # read only when clicked, not on every rerun
    file_name=f"headstart-{run.id}.zip",
    mime="application/zip",
    type="primary",
    icon=":material/download:",
    key="export_download",
    on_click="ignore",
)
with zipfile.ZipFile(path) as zf:
    listing = [{"file": i.filename, "size": ui.size(i.file_size)} for i in zf.infolist()]
    card = zf.read("README.md").decode("utf-8")
    report = json.loads(zf.read("export_report.json")) if "export_report.json" in zf.namelist() else None
if report:
    onnx, int8, checked = report["onnx"], report["int8"], report["checked_on"]
    st.success(
        f"Checked on {checked['pictures']} {checked['source']} pictures: model.onnx gives the trained model's answer on "
        f"every one (probabilities within {onnx['max_probability_difference']:.1g})"
        + (
            f"; the int8 model agrees on {ui.pct(int8['label_agreement'])} of them at "
            f"{ui.size(report['files'].get('model.int8.onnx'))} instead of {ui.size(report['files'].get('model.onnx'))}."
            if int8.get("made")
            else "."
        ),
        icon=":material/verified:",
    )
WHAT = {
    "model.safetensors": "the trained weights (PyTorch)",
    "model.onnx": "the same model as ONNX: runs with onnxruntime alone, in any language",
    "model.int8.onnx": "a smaller, faster int8 copy (its agreement is in the model card)",
    "predict_onnx.py": "the script without torch: python predict_onnx.py [--int8] photo.jpg",
    "requirements-onnx.txt": "what predict_onnx.py needs (onnxruntime, numpy, pillow)",
    "export_report.json": "the checks made at export, as numbers",
    "labels.json": "the class names, in the model's order",
    "preprocessing.json": "how to prepare a picture (size, crop, normalisation)",
    "predict.py": "a small script: python predict.py photo.jpg",
    "requirements.txt": "what both scripts need",
    "summary.json": "how the training went",
    "README.md": "the model card: classes, data, accuracy, limits",
}
st.dataframe(
    [{**row, "what it is": WHAT.get(row["file"], "")} for row in listing], hide_index=True, key="export_listing"
)
st.caption("It also comes back in: on 5. Predict, choose *An exported model (.zip)* and drop this file.")
with st.expander("Model card (README.md in the zip)", expanded=True):
    st.markdown(card)

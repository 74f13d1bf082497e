"""Data: bring the pictures (a folder, a zip, a server path or a sample set) and see what Headstart found in them."""

import streamlit as st

from pages import _common as ui
from pages._folder_upload import folder_uploader
from tl_core import limits, settings, uploads
from tl_core.plots import class_counts_figure
from tl_core.samples import SAMPLES, build_sample

ui.header("1. Data", "Give Headstart your pictures: one sub-folder per class, named after the class (cats/, dogs/...).")

SHOWN_PROBLEMS = 1000  # skipped files listed on the page
SERVER = {"server": "Folder on this server"} if settings.server_data_root() is not None else {}  # its owner's choice
SOURCES = {"folder": "Upload a folder", "zip": "Upload a zip", **SERVER, "sample": "Sample data set"}
source = st.radio(
    "Where are your pictures?",
    list(SOURCES),
    format_func=SOURCES.get,
    horizontal=True,
    key="data_source",
    persist_state="session",
)
generation = st.session_state.setdefault("data_upload_generation", 0)

if source == "folder":
    st.caption(
        "Pick the folder that holds the class folders, e.g. `animals/` containing `cats/` and `dogs/`. "
        "The pictures are saved once on the server; the folder names become the class names."
    )

    folder_uploader(lambda folder, label: ui.set_dataset(folder, f"uploaded folder '{label}'"))
elif source == "zip":
    st.caption("A .zip of the folder that holds the class folders (or of `train/` and `val/` folders that hold them).")
    archive = st.file_uploader("Zip file", type=["zip"], key=f"data_zip_upload_{generation}")
    if archive is not None:
        with ui.user_errors("The zip could not be saved"), st.spinner("Saving the zip on the server..."):
            path = uploads.store_file(archive.getvalue(), "uploads", ".zip")
            ui.set_dataset(path, f"uploaded zip '{archive.name}'")
            st.session_state["data_upload_generation"] = generation + 1
            st.rerun()
elif source == "server" and (root := settings.server_data_root()) is not None:
    st.caption(f"For pictures already on the computer that runs Headstart. Only paths under `{root}` are allowed.")
    typed = st.text_input(
        "Folder (or .zip) path on the server", key="data_server_path", placeholder=str(root / "photos")
    )
    if st.button("Use this folder", key="data_server_use", type="primary"):
        with ui.user_errors("That path cannot be used"):
            path = uploads.resolve_server_path(typed)
            ui.set_dataset(path, f"server folder '{path.name}'")
else:
    from tl_core.backbones import hub_reachable

    online = hub_reachable()
    keys = [k for k, s in SAMPLES.items() if online or not s.needs_internet]
    key = st.selectbox(
        "Sample data set",
        keys,
        format_func=lambda k: SAMPLES[k].title,
        key="data_sample_key",
        persist_state="session",
    )
    st.caption(SAMPLES[key].description)
    if not online:
        st.caption("No internet here: only the samples that ship with Headstart are offered.")
    per_class = st.number_input(
        "Pictures per class", min_value=5, max_value=500, value=50, step=5, key="data_sample_per_class"
    )
    if st.button("Use this sample", key="data_sample_use", type="primary"):
        with ui.user_errors("The sample data set could not be made"), st.spinner("Preparing the sample pictures..."):
            folder = build_sample(key, settings.data_dir().resolve() / "samples", per_class=int(per_class))
            ui.set_dataset(folder, f"sample '{SAMPLES[key].title}' ({int(per_class)} per class)")

with st.expander("Limits on this server"):
    st.caption("What Headstart accepts here; the server's owner can change each with the setting named.")
    st.table(limits.table(), hide_index=True)

st.divider()
dataset = ui.current_dataset()
if dataset is None:
    st.info("No data set yet: choose one above. Each class needs at least 5 pictures; 20 or more is better.")
    st.stop()

st.subheader(f"Your data set: {ui.plain(dataset['origin'])}")
val_split, test_split, seed = ui.split_settings()
manifest = None
checking = st.empty()  # a progress bar while a new folder is checked (a kept scan draws nothing)
with ui.user_errors("Headstart cannot use these pictures"):
    manifest = ui.scan(dataset["path"], val_split, test_split, seed, on_progress=ui.scan_progress(checking))
checking.empty()
if manifest is None:
    st.stop()

problems = [{"file": p.path, "why": p.reason} for p in manifest.skipped]
problems += [{"file": name, "why": f"not uploaded: {why}"} for name, why in uploads.not_uploaded(dataset["path"])]
counts = {split: manifest.class_counts(split) for split in ("train", "val", "test")}
c1, c2, c3, c4 = st.columns(4)
c1.metric("Classes", len(manifest.class_names))
c2.metric("Pictures", f"{len(manifest.samples):,}", help="Usable pictures, after skipping the ones listed below.")
c3.metric(
    "Training / validation",
    f"{sum(counts['train'].values()):,} / {sum(counts['val'].values()):,}",
    help="The model learns from the training pictures; the validation pictures are kept aside to measure it.",
)
c4.metric("Skipped files", f"{len(problems):,}")
st.caption(
    "Headstart keeps "
    + (
        "your own train/val folders as the split."
        if manifest.user_split
        else f"{val_split:.0%} of each class aside for validation"
    )
    + ("" if manifest.user_split else " (change it under Train → Advanced).")
)
ui.chart(st, class_counts_figure(counts), key="data_counts_chart")

st.subheader("Problems found")
if not manifest.warnings and not problems:
    st.success("No problem found: every file is a usable picture and the classes look balanced.")
for warning in manifest.warnings:
    st.warning(warning)
if problems:
    st.write(f"{len(problems):,} file(s) were skipped and will not be used:")
    if len(problems) > SHOWN_PROBLEMS:  # every row goes to the browser: tens of thousands would stall the page
        st.caption(f"The first {SHOWN_PROBLEMS:,} are listed here.")
    st.dataframe(problems[:SHOWN_PROBLEMS], hide_index=True, key="data_skipped")

st.subheader("Samples per class")
PER_CLASS = 6
MAX_CLASSES = 20
for label, name in enumerate(manifest.class_names[:MAX_CLASSES]):
    members = [s for s in manifest.samples if s.label == label][:PER_CLASS]
    st.markdown(f"**{ui.plain(name)}** · {sum(c[name] for c in counts.values())} pictures")
    images, captions = [], []
    for sample in members:
        with ui.user_errors(f"'{sample.relpath}' could not be shown"):
            images.append(ui.thumbnail(sample.path))
            captions.append(sample.relpath.rsplit("/", 1)[-1])
    if images:
        st.image(images, caption=captions, width=96)
if len(manifest.class_names) > MAX_CLASSES:
    st.caption(f"... and {len(manifest.class_names) - MAX_CLASSES} more classes.")

ui.next_step("choose the pretrained network that will learn your classes.", "model", "Go to 2. Model")

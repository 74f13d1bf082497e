"""Predict: new pictures, one or a whole folder or zip at once, labelled by a run of this server or by an exported
model; every answer in a table and a CSV."""

import csv
import io
from pathlib import Path

import streamlit as st

from pages import _common as ui
from tl_core import settings, uploads
from tl_core.images import IMAGE_EXTENSIONS, UnusableImage, open_rgb
from tl_core.plots import top_k_figure

ui.header(
    "5. Predict",
    "Give the trained model new pictures, one or hundreds at once; it answers with a label and its confidence.",
)

BATCH = 32  # pictures per forward pass: memory stays small however many are dropped
SHOWN = 12  # pictures shown one by one (with their heat maps); every one is in the table and the CSV
TOP_K = 3


@st.cache_resource(show_spinner="Opening the exported model...", max_entries=4)
def bundle_predictor(path: str, name: str):
    from tl_core.bundle import load_bundle

    return load_bundle(path, name=name)


MODELS = {"run": "A run of this server", "bundle": "An exported model (.zip)"}
source = st.radio("Model", list(MODELS), format_func=MODELS.get, horizontal=True, key="predict_source")
predictor = None
if source == "run":
    run = ui.pick_run("predict_run")
    if run is None:
        ui.needs(
            "No trained model yet: train one first, or use a model exported from Headstart.", "train", "Go to 3. Train"
        )
        st.stop()
    model_id, class_names = str(run.run_dir), run.class_names
else:
    archive = st.file_uploader("Exported model: the .zip from 6. Export", type=["zip"], key="predict_bundle")
    if archive is None:
        st.info("Drop a model exported from Headstart (its .zip) above; it labels pictures as it did where it trained.")
        st.stop()
    stored = ui.attempt("The model could not be saved", uploads.store_file, archive.getvalue(), "bundles", ".zip")
    predictor = stored and ui.attempt("The exported model cannot be used", bundle_predictor, str(stored), archive.name)
    if predictor is None:
        st.stop()
    model_id, class_names = str(stored), predictor.class_names
st.caption("Classes it knows: " + ", ".join(ui.plain(name) for name in class_names))

WAYS = {"pictures": "Pictures", "folder": "A folder", "zip": "A zip of pictures"}
way = st.radio("Pictures to label", list(WAYS), format_func=WAYS.get, horizontal=True, key="predict_way")
pictures = [e.lstrip(".") for e in IMAGE_EXTENSIONS]
if way == "pictures":
    given = st.file_uploader("New pictures", type=pictures, accept_multiple_files=True, key="predict_files")
elif way == "folder":
    given = st.file_uploader("A folder of pictures", accept_multiple_files="directory", key="predict_folder")
else:
    given = st.file_uploader("A zip of pictures", type=["zip"], key="predict_zip")
    given = [given] if given is not None else []
if not given:
    st.info("Drop pictures above. The model answers with one of its classes even for something else.")
    st.stop()


def items_to_label(given: list) -> tuple[list[tuple[str, object]], list[dict]]:
    """(name, something open_rgb reads) for each picture given, and a row for each file refused on the way."""
    from tl_core.data import extract_zip, is_ignored

    if way != "zip":
        return [(f.name, f) for f in given if not any(is_ignored(p) for p in f.name.split("/"))], []
    path = uploads.store_file(given[0].getvalue(), "uploads", ".zip")
    folder, refused = extract_zip(path, settings.cache_dir() / "unzipped")
    found = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    items = [(rel.as_posix(), folder / rel) for rel in found if not any(is_ignored(part) for part in rel.parts)]
    return items, [{"picture": r.path, "error": r.reason} for r in refused]


def label_all(predictor, items: list, refused: list[dict]) -> tuple[list[dict], list]:
    """One row per file, in order (an answer, or the reason it could not be read), and the first SHOWN answers with
    their decoded pictures."""
    rows, shown = list(refused), []
    for start in range(0, len(items), BATCH):
        batch, images = [], []
        for name, item in items[start : start + BATCH]:
            try:
                images.append(open_rgb(item, draft_size=predictor.spec.cache_size))
                batch.append({"picture": name})
            except UnusableImage as exc:
                batch.append({"picture": name, "error": str(exc)})
        answers = predictor.predict_images(images, top_k=TOP_K) if images else []
        good = [row for row in batch if "error" not in row]
        for row, answer, image in zip(good, answers, images, strict=True):
            row.update(answer)
            if len(shown) < SHOWN:
                shown.append((row, image))
        rows += batch
    return rows, shown


def said(row: dict) -> str:
    return row["label"] if row.get("sure", True) else f"not sure (best guess {row['label']})"


def as_csv(rows: list[dict]) -> str:
    """Every file, its answer and its top-k (or why it was left out): what a spreadsheet or a script reads."""
    out = io.StringIO()
    heads = [h for i in range(1, TOP_K + 1) for h in (f"top_{i}", f"top_{i}_confidence")]
    writer = csv.writer(out)
    writer.writerow(["picture", "label", "sure", "confidence", *heads, "error"])
    for row in rows:
        top = [v for t in row.get("top_k", []) for v in (t["label"], f"{t['confidence']:.6f}")]
        top += [""] * (len(heads) - len(top))
        answer = [row["label"], row["sure"], f"{row['confidence']:.6f}"] if "label" in row else ["", "", ""]
        writer.writerow([row["picture"], *answer, *top, row.get("error", "")])
    return out.getvalue()


# The answers are kept for this model and these files, so the heat-map switch does not label them all again.
key = (source, model_id, way, tuple(getattr(f, "file_id", f.name) for f in given))
if st.session_state.get("predict_done", (None,))[0] != key:
    if predictor is None:
        predictor = ui.attempt("The model could not be loaded", ui.load_predictor, run.run_dir)
        if predictor is None:
            st.stop()
    with st.spinner("Labelling the pictures..."):
        found = ui.attempt("The pictures could not be read", items_to_label, given)
        done = found and ui.attempt("The pictures could not be labelled", label_all, predictor, *found)
    if not done:
        st.stop()
    st.session_state["predict_done"] = (key, *done)
_, rows, shown = st.session_state["predict_done"]
answered = [r for r in rows if "label" in r]
left_out = [r for r in rows if "error" in r]

if left_out:
    sentences = [f"'{ui.plain(r['picture'])}' is left out: {r['error']}." for r in left_out[:10]]
    more = f"\n\n... and {len(left_out) - 10} more, each in the CSV with its reason." if len(left_out) > 10 else ""
    st.warning("\n\n".join(sentences) + more)
if not answered:
    st.stop()

st.markdown(f"**{len(answered)}** picture(s) labelled" + (f", {len(left_out)} left out." if left_out else "."))
st.download_button(
    "Download every answer (CSV)",
    data=as_csv(rows),
    file_name="predictions.csv",
    mime="text/csv",
    icon=":material/download:",
    key="predict_csv",
    on_click="ignore",
)
if len(answered) > 1:
    st.dataframe(
        [{"picture": r["picture"], "label": said(r), "confidence": 100 * r["confidence"]} for r in answered],
        hide_index=True,
        key="predict_table",
        column_config={"confidence": st.column_config.NumberColumn(format="%.1f%%")},  # 72.3%, as everywhere
    )

show_heat = st.toggle(
    "Show where the model looked",
    value=True,
    key="predict_heat",
    help="Grad-CAM: warm colours mark the parts of the picture that pushed the model towards its answer.",
)
if len(answered) > len(shown):
    st.caption(f"The first {len(shown)} pictures one by one; every one is in the table above and in the CSV.")
for index, (result, image) in enumerate(shown):
    left, middle, right = st.columns([1, 1, 2])
    left.image(image, caption=Path(result["picture"]).name, width=160)
    if show_heat:
        if predictor is None:
            predictor = ui.attempt("The model could not be loaded", ui.load_predictor, run.run_dir)
        with middle, ui.user_errors("The heat map could not be drawn"):
            middle.image(ui.heat_map(predictor, image), caption=f"evidence for '{result['label']}'", width=160)
    with right:
        if result.get("sure", True):
            st.markdown(f"**{ui.plain(result['label'])}** · {ui.pct(result['confidence'])} confident")
        else:
            guess = ui.plain(result["label"])
            st.markdown(f"**not sure** (best guess {guess}) · {ui.pct(result['confidence'])} confident")
        if result["confidence"] < 0.5 and result.get("sure", True):
            st.caption(
                "Unsure: the model spreads its answer over several classes. Pictures unlike the training ones, or a "
                "model trained briefly, do this; more pictures or epochs usually help."
            )
        ui.chart(st, top_k_figure(result["top_k"]), key=f"predict_topk_{index}", config={"displayModeBar": False})

ui.next_step("take the model away.", "export", "Go to 6. Export")

"""Evaluate: how good a trained model is on the pictures it never trained on, and where it goes wrong."""

import streamlit as st

from pages import _common as ui
from tl_core.backbones import label_for
from tl_core.images import open_rgb
from tl_core.metrics import evaluate_run
from tl_core.plots import accuracy_figure, confusion_figure
from tl_core.runs import read_metrics

ui.header(
    "4. Evaluate", "How often the model is right on held-out pictures, class by class, and which ones it gets wrong."
)

run = ui.pick_run("evaluate_run")
if run is None:
    ui.needs("No trained model yet: train one first.", "train", "Go to 3. Train")
    st.stop()

evaluation = ui.attempt("This run cannot be evaluated", evaluate_run, run.run_dir)
if evaluation is None:
    st.stop()

summary = run.summary
c1, c2, c3, c4 = st.columns(4)
c1.metric(
    "Validation accuracy",
    ui.pct(evaluation.accuracy),
    help="Share of the validation pictures (never used for training) that the best weights label right.",
)
c2.metric(
    "Macro F1",
    f"{evaluation.macro_f1:.3f}",
    help="The mean over classes of F1 (a balance of precision and recall); 1.0 is perfect. Unlike accuracy it "
    "is not inflated by one big class.",
)
c3.metric("Validation pictures", evaluation.num_images)
if summary.get("test_accuracy") is not None:
    c4.metric("Test accuracy", ui.pct(summary["test_accuracy"]), help="Measured once, at the end, on the test share.")
else:
    c4.metric("Mistakes", len(evaluation.mistakes))
st.caption(
    f"{label_for(summary.get('backbone', '?'))} · weights: {summary.get('weights')} · "
    f"{summary.get('frozen_blocks')}/{summary.get('total_blocks')} blocks frozen · "
    f"{summary.get('epochs_run')} epochs · best at epoch {summary.get('best_epoch')} · "
    + ("backbone features from the cache (only the head trained) · " if summary.get("feature_cache") else "")
    + summary.get("message", "")
)

left, right = st.columns([3, 2])
with left:
    st.plotly_chart(confusion_figure(evaluation.confusion, evaluation.class_names), key="evaluate_confusion")
    st.caption("Each row is the true class; each column what the model said. Right answers lie on the diagonal.")
with right:
    st.markdown("**Per class**")
    st.dataframe(
        evaluation.per_class,
        hide_index=True,
        key="evaluate_per_class",
        column_config={
            "precision": st.column_config.NumberColumn(
                format="%.2f", help="When the model says this class, how often it is right."
            ),
            "recall": st.column_config.NumberColumn(
                format="%.2f", help="Of the pictures of this class, the share the model finds."
            ),
            "f1": st.column_config.NumberColumn(format="%.2f", help="Balance of precision and recall (1 is perfect)."),
            "support": st.column_config.NumberColumn(help="Validation pictures of this class."),
        },
    )
    epochs = [e for e in read_metrics(run.run_dir) if e.get("event") == "epoch"]
    if epochs:
        st.plotly_chart(accuracy_figure(epochs), key="evaluate_curve")

st.subheader("Mistakes")
if not evaluation.mistakes:
    st.success("No mistake on the validation pictures.")
else:
    st.caption(
        "The most confident mistakes first: a wrong label given with high confidence often means a mislabelled picture."
    )
    shown = evaluation.mistakes[:12]
    explain = st.toggle(
        "Show where the model looked",
        key="evaluate_heat",
        help="Grad-CAM on each mistake: warm colours mark what pushed the model towards its wrong answer.",
    )
    predictor = ui.attempt("The model could not be loaded", ui.load_predictor, run.run_dir) if explain else None
    cols = st.columns(6)
    for i, mistake in enumerate(shown):
        with cols[i % 6]:
            caption = f"true: {mistake['true']} · said: {mistake['predicted']} ({mistake['confidence']:.0%})"
            with ui.user_errors("Picture not shown"):
                if predictor is not None:
                    picture = open_rgb(mistake["path"])
                    said = predictor.class_names.index(mistake["predicted"])
                    st.image(ui.heat_map(predictor, picture, said), caption=caption)
                else:
                    st.image(ui.thumbnail(mistake["path"]), caption=caption)
    if len(evaluation.mistakes) > len(shown):
        st.caption(f"... and {len(evaluation.mistakes) - len(shown)} more.")

others = [r for r in ui.list_runs(with_model=True) if r.run_dir != run.run_dir]
if others:
    st.subheader("Compare runs")
    by_dir = {str(r.run_dir): r for r in others}
    picked = st.multiselect(
        "Runs to set beside this one",
        list(by_dir),
        format_func=lambda d: ui.run_label(by_dir[d]),
        key="evaluate_compare",
        help="For example the same data with and without pretraining, or with more blocks trained.",
    )
    if picked:
        st.dataframe(
            [
                {
                    "run": r.id,
                    "backbone": label_for(r.summary.get("backbone", "?")),
                    "weights": r.summary.get("weights"),
                    "frozen blocks": f"{r.summary.get('frozen_blocks')}/{r.summary.get('total_blocks')}",
                    "epochs": r.summary.get("epochs_run"),
                    "best validation accuracy": ui.pct(r.summary.get("best_val_accuracy")),
                    "training seconds": r.summary.get("train_seconds"),
                }
                for r in [run] + [by_dir[d] for d in picked]
            ],
            hide_index=True,
            key="evaluate_compare_table",
        )

ui.next_step("try the model on new pictures.", "predict", "Go to 5. Predict")

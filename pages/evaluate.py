"""Evaluate: how good a trained model is on the pictures it never trained on, where it goes wrong, and whether to
trust it."""

import streamlit as st

from pages import _common as ui
from pages import _trust as sections
from tl_core.backbones import label_for
from tl_core.metrics import evaluate_run
from tl_core.operating_point import read_rule
from tl_core.plots import accuracy_figure, confusion_figure
from tl_core.runs import read_metrics

ui.header(
    "4. Evaluate", "How often the model is right on held-out pictures, class by class, and which ones it gets wrong."
)

run = ui.pick_run("evaluate_run")
if run is None:
    ui.needs("No trained model yet: train one first.", "train", "Go to 3. Train")
    st.stop()

rule = read_rule(run.run_dir)
evaluation = ui.attempt("This run cannot be evaluated", evaluate_run, run.run_dir, rule)
if evaluation is None:
    st.stop()

summary = run.summary
sections.verdict_section(run, evaluation)

c1, c2, c3, c4 = st.columns(4)
c1.metric(
    "Validation accuracy",
    ui.pct(evaluation.accuracy),
    help="Share of the validation pictures (never used for training) that the best weights label right"
    + (", at the saved line." if rule and rule["kind"] == "binary" else "."),
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
    f"{ui.plain(run.title)} · {label_for(summary.get('backbone', '?'))} · weights: {summary.get('weights')} · "
    f"{summary.get('frozen_blocks')}/{summary.get('total_blocks')} blocks frozen · "
    f"{summary.get('epochs_run')} epochs · best at epoch {summary.get('best_epoch')} · "
    + ("backbone features from the cache (only the head trained) · " if summary.get("feature_cache") else "")
    + ui.plain(summary.get("message", ""))
)

if st.button(
    "Continue training from this model",
    key="evaluate_continue",
    icon=":material/replay:",
    help="A new run that starts from this run's weights instead of the original pretrained ones: on the current "
    "data set (add pictures on the Data page first) or this run's, with more epochs or more blocks trained. This "
    "run stays as it is.",
):
    dataset = (ui.current_dataset() or {}).get("path") or run.config["data_dir"]
    ui.prepare_training(dataset, run.config["backbone"], {}, weights=str(run.run_dir / "model.safetensors"))

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
        ui.chart(st, accuracy_figure(epochs), key="evaluate_curve")

sections.calibration_section(run)
sections.operating_point_section(run, evaluation)
sections.mistakes_section(run, evaluation)
sections.mislabels_section(run)
runs = ui.list_runs(with_model=True)  # read once for the two sections that set runs side by side
sections.transfer_section(run, runs)
sections.compare_section(run, runs)

ui.next_step("try the model on new pictures.", "predict", "Go to 5. Predict")

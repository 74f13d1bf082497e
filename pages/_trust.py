"""The sections of the Evaluate page after its headline figures: each decides one question a person has before
trusting the model (what to do next, how sure it is, where to draw the line, which labels look wrong, what
pretraining bought, how it compares). The page calls them in order."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages import _common as ui
from tl_core import data_versions, efficiency, operating_point
from tl_core.advice import verdict
from tl_core.images import open_rgb
from tl_core.metrics import Evaluation, evaluate_run
from tl_core.plots import (
    compare_curves_figure,
    confusion_figure,
    efficiency_figure,
    not_sure_figure,
    reliability_figure,
    threshold_figure,
)
from tl_core.runs import read_json, read_metrics

PER_PAGE = 12


def _same_split(run) -> dict:
    """The run's split settings, so the next run is measured on the same validation pictures."""
    return {k: run.config[k] for k in ("val_split", "test_split", "seed") if k in run.config}


def _train_counts(run) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in (read_json(run.run_dir / "split.json", {}) or {}).get("files", []):
        if row["split"] == "train":
            counts[row["label"]] = counts.get(row["label"], 0) + 1
    return counts


def verdict_section(run, evaluation: Evaluation) -> None:
    found = verdict(evaluation, run.config, _train_counts(run), run.summary)
    with st.container(border=True, key="evaluate_verdict"):
        st.markdown(f"#### {found.headline}")
        for line in found.findings:
            st.markdown(f"- {line}")
        if not found.advice:
            st.success("Every class is found at least 95% of the time: nothing in these numbers asks for a change.")
        for i, advice in enumerate(found.advice):
            text_col, button_col = st.columns([4, 1], vertical_alignment="center")
            text_col.markdown(f"**Next step:** {advice.text}")
            if advice.action == "more_pictures":
                button_col.page_link(ui.PAGES["data"].path, label="Add pictures", icon=":material/add_photo_alternate:")
            elif advice.action == "threshold":
                if button_col.button("Set this line", key=f"evaluate_advice_{i}"):
                    st.session_state[f"evaluate_positive_{run.id}"] = advice.settings["positive"]
                    st.session_state[f"evaluate_threshold_{run.id}"] = advice.settings["threshold"]
                    st.rerun()
            elif button_col.button("Set it up", key=f"evaluate_advice_{i}", help="Opens Train with this choice made."):
                depth = None
                if advice.action == "fine_tune":
                    depth = run.summary.get("total_blocks")
                ui.prepare_training(
                    run.config["data_dir"], run.config["backbone"], {**_same_split(run), **advice.settings}, depth,
                    run.config["weights"],
                )  # fmt: skip
    with st.expander("What the words mean"):
        st.markdown(
            "- **Recall** of a class: of its pictures, the share the model finds. A recall of 0.62 for *defective* "
            "means 62 of every 100 defective items are caught and 38 slip through.\n"
            "- **Precision** of a class: when the model says this class, how often it is right. Low precision "
            "means false alarms.\n"
            "- **F1**: one number balancing the two (1 is perfect).\n"
            "- **Support**: how many validation pictures of the class there are. Few pictures, shaky figures.\n"
            "- **Validation pictures** were kept aside and never trained on, so they show how the model does on "
            "pictures it has not seen."
        )


def calibration_section(run) -> None:
    st.subheader("How sure it is")
    fitted = run.summary.get("calibration")
    if not fitted:
        st.info(
            "This run has no calibration (it was stopped, or trained before Headstart calibrated): its confidences "
            "are the model's own. Train again to have them calibrated."
        )
        return
    from tl_core.calibration import Calibration

    calibration = Calibration(**fitted)
    st.markdown(calibration.sentence())
    left, right = st.columns([3, 2])
    ui.chart(left, reliability_figure(calibration.bins_before, calibration.bins_after), key="evaluate_reliability")
    with right:
        c1, c2 = st.columns(2)
        c1.metric("Off by, before", ui.pct(calibration.ece_before), help="Expected calibration error before.")
        c2.metric(
            "Off by, after",
            ui.pct(calibration.ece_after),
            delta=f"{(calibration.ece_after - calibration.ece_before) * 100:+.1f} points",
            delta_color="inverse",
            help="Expected calibration error: the average gap between how sure the model is and how often it is "
            "right, over the validation pictures. 0% is a model exactly as sure as it is right.",
        )
        st.caption(
            f"Temperature {calibration.temperature:.2f}, fitted on {calibration.num_images} validation pictures. "
            "Evaluate, Predict and the export use the calibrated confidences; the answers themselves do not change."
        )
        st.dataframe(
            [
                {"confidence": f"{b['low']:.0%}-{b['high']:.0%}", "pictures": b["count"],
                 "right": ui.pct(b["accuracy"]) if b["count"] else "",
                 "sure": ui.pct(b["confidence"]) if b["count"] else ""}
                for b in calibration.bins_after if b["count"]
            ],
            hide_index=True,
            key="evaluate_reliability_table",
        )  # fmt: skip


def operating_point_section(run, evaluation: Evaluation) -> None:
    st.subheader("Where to draw the line")
    probs, names = evaluation.probabilities, evaluation.class_names
    saved = operating_point.read_rule(run.run_dir)
    if probs is None:
        st.info("This run was trained before Headstart kept every class's probability: train again to set a line.")
        return
    if len(names) == 2:
        if (
            f"evaluate_positive_{run.id}" not in st.session_state
            or st.session_state[f"evaluate_positive_{run.id}"] not in names
        ):
            by_recall = sorted(evaluation.per_class, key=lambda r: (r["recall"] is None, r["recall"], r["support"]))
            st.session_state[f"evaluate_positive_{run.id}"] = (saved or {}).get("positive", by_recall[0]["class"])
        st.session_state.setdefault(f"evaluate_threshold_{run.id}", float((saved or {}).get("threshold", 0.5)))
        c1, c2 = st.columns([1, 2])
        positive = c1.selectbox(
            "The class to catch", names, key=f"evaluate_positive_{run.id}", help="Usually the one it is costly to miss."
        )
        threshold = c2.slider(
            f"Say {positive} from this probability on",
            0.01,
            0.99,
            step=0.01,
            key=f"evaluate_threshold_{run.id}",
            help="Lower: finds more of it, with more false alarms. Higher: fewer false alarms, more missed.",
        )
        rule = {"kind": "binary", "positive": positive, "threshold": round(float(threshold), 2)}
        table = operating_point.threshold_table(probs, evaluation.labels, names, positive)
        row = min(table, key=lambda r: abs(r["threshold"] - threshold))
        st.markdown(
            f"At **{threshold:.2f}** it finds **{row['found']} of {row['of']}** {ui.plain(positive)} pictures "
            f"({row['recall']:.0%}) with **{row['false_alarms']}** false alarm(s); when it says {ui.plain(positive)} "
            f"it is right {row['precision']:.0%} of the time."
        )
        left, right = st.columns(2)
        ui.chart(left, threshold_figure(table, threshold, positive), key="evaluate_threshold_chart")
    else:
        st.session_state.setdefault(f"evaluate_not_sure_{run.id}", float((saved or {}).get("threshold", 0.0)))
        threshold = st.slider(
            "Answer only when at least this sure (else 'not sure')",
            0.0,
            0.99,
            step=0.01,
            key=f"evaluate_not_sure_{run.id}",
            help="Pictures under the line are answered 'not sure', for a person to look at.",
        )
        rule = {"kind": "not_sure_below", "threshold": round(float(threshold), 2)} if threshold > 0 else None
        table = operating_point.not_sure_table(probs, evaluation.labels)
        row = min(table, key=lambda r: abs(r["threshold"] - threshold))
        st.markdown(
            f"At **{threshold:.2f}** it answers **{row['answered']:.0%}** of the pictures, and is right on "
            f"**{ui.pct(row['accuracy'])}** of those; the rest are 'not sure'."
        )
        left, right = st.columns(2)
        ui.chart(left, not_sure_figure(table, threshold), key="evaluate_not_sure_chart")
    right.plotly_chart(
        confusion_figure(operating_point.confusion_at(probs, evaluation.labels, names, rule), names),
        key="evaluate_threshold_confusion",
    )
    if len(names) > 2:
        right.caption("The confusion matrix of the pictures it answers at this line.")
    b1, b2, _ = st.columns([1, 1, 2])
    as_without = saved is None and (rule is None or rule.get("threshold") == 0.5)  # what no line does anyway
    if rule != saved and not as_without and b1.button("Save this line", type="primary", key="evaluate_save_rule"):
        with ui.user_errors("The line could not be saved"):
            operating_point.save_rule(run.run_dir, rule)
            st.rerun()
    if saved and b2.button("Back to the likeliest class", key="evaluate_clear_rule"):
        operating_point.save_rule(run.run_dir, None)
        st.session_state.pop(f"evaluate_threshold_{run.id}", None)
        st.session_state.pop(f"evaluate_not_sure_{run.id}", None)
        st.rerun()
    st.caption(
        "Saved: "
        + (_rule_words(saved) if saved else "none; each picture gets its likeliest class.")
        + " Predict and the export follow the saved line."
    )


def _rule_words(rule: dict) -> str:
    if rule["kind"] == "binary":
        return f"{ui.plain(rule['positive'])} from a probability of {rule['threshold']:.2f} on."
    return f"'not sure' under {rule['threshold']:.2f}."


def mistakes_section(run, evaluation: Evaluation) -> None:
    st.subheader("Mistakes")
    mistakes = evaluation.mistakes
    if not mistakes:
        st.success("No mistake on the validation pictures.")
        return
    st.caption(
        f"{len(mistakes)} mistake{'s' if len(mistakes) > 1 else ''}, the most confident first: a wrong answer given with high confidence often means "
        "a mislabelled picture. Open one to see it large, with where the model looked."
    )
    pages = (len(mistakes) + PER_PAGE - 1) // PER_PAGE
    page = 1
    if pages > 1:
        page = st.number_input(f"Page (of {pages})", 1, pages, key="evaluate_mistakes_page")
    shown = mistakes[(page - 1) * PER_PAGE : page * PER_PAGE]
    cols = st.columns(6)
    for i, mistake in enumerate(shown):
        with cols[i % 6]:
            with ui.user_errors("Picture not shown"):
                st.image(ui.thumbnail(mistake["path"]))
            st.caption(f"true: {ui.plain(mistake['true'])} · said: {ui.plain(mistake['predicted'])} "
                       f"({mistake['confidence']:.0%})")  # fmt: skip
            if st.button("Open", key=f"evaluate_open_{(page - 1) * PER_PAGE + i}", icon=":material/zoom_in:"):
                _open_mistake(run.run_dir, mistake)


@st.dialog("Mistake", width="large")
def _open_mistake(run_dir: Path, mistake: dict) -> None:
    st.markdown(
        f"**{ui.plain(Path(mistake['path']).name)}**: labelled **{ui.plain(mistake['true'])}**, the model said "
        f"**{ui.plain(mistake['predicted'])}** ({mistake['confidence']:.1%} sure)."
    )
    with ui.user_errors("The picture could not be shown"):
        predictor = ui.load_predictor(run_dir)
        picture = open_rgb(mistake["path"])
        left, right = st.columns(2)
        left.image(picture, caption="the picture", width="stretch")
        said = predictor.class_names.index(mistake["predicted"])
        right.image(ui.heat_map(predictor, picture, said), caption="where the evidence for its answer was",
                    width="stretch")  # fmt: skip


@st.cache_resource(show_spinner=False, max_entries=2)
def _run_features(run_dir: str, weights_mtime: float):
    """The run's pictures and pretrained features, loaded once for both analyses below."""
    from tl_core.features import features_of_run

    return features_of_run(run_dir)


def _analysis(run, action: str, spinner: str, cached) -> object | None:
    """cached(run_dir, weights_mtime) under a spinner, or None after saying why it failed."""
    with st.spinner(spinner):
        return ui.attempt(action, cached, str(run.run_dir), (run.run_dir / "model.safetensors").stat().st_mtime)


@st.cache_resource(show_spinner=False, max_entries=4)
def _suspects(run_dir: str, weights_mtime: float):
    from tl_core.mislabels import find_suspects

    manifest, features, config = _run_features(run_dir, weights_mtime)
    return manifest, find_suspects(manifest, features, seed=config["seed"])


def mislabels_section(run) -> None:
    st.subheader("Labels that look wrong")
    st.caption(
        "Each training and validation picture is checked by a head fitted without it, on the pretrained features "
        "(seconds). Those whose label the other pictures of their class do not vouch for come first."
    )
    key = f"evaluate_suspects_{run.id}"
    if not st.session_state.get(key) and st.button("Look for mislabelled pictures", key="evaluate_find_mislabels"):
        st.session_state[key] = True
        st.rerun()  # the button gives way to the list
    if not st.session_state.get(key):
        return
    found = _analysis(
        run,
        "The pictures could not be checked",
        "Checking every picture against the others...",
        _suspects,
    )
    if found is None:
        return
    manifest, suspects = found
    if not suspects:
        st.success("No picture's label looks wrong: the pictures of each class vouch for one another.")
        return
    st.markdown(
        f"**{len(suspects)}** picture(s) look mislabelled. Decide for each; the original folder is not changed."
    )
    choices = ["keep", "relabel", "exclude"]
    changes: dict[str, str | None] = {}
    for i, suspect in enumerate(suspects):
        picture, words, choice = st.columns([1, 3, 2], vertical_alignment="center")
        with ui.user_errors("Picture not shown"):
            picture.image(ui.thumbnail(suspect.path))
        words.markdown(
            f"`{ui.plain(suspect.relpath)}` ({suspect.split}): labelled **{ui.plain(suspect.label)}** "
            f"({suspect.label_probability:.0%}), looks like **{ui.plain(suspect.suggested)}** "
            f"({suspect.suggested_probability:.0%})"
        )
        picked = choice.segmented_control(
            "What to do", choices, default="keep", key=f"evaluate_suspect_{run.id}_{i}",
            format_func=lambda c, s=suspect: f"relabel as {s.suggested}" if c == "relabel" else c,
            label_visibility="collapsed",
        )  # fmt: skip
        if picked == "relabel":
            changes[suspect.relpath] = suspect.suggested
        elif picked == "exclude":
            changes[suspect.relpath] = data_versions.EXCLUDE
    relabelled = sum(1 for v in changes.values() if v is not None)
    if st.button(
        f"Write a new version of the data set ({relabelled} relabelled, {len(changes) - relabelled} left out)",
        key="evaluate_write_version",
        disabled=not changes,
        type="primary",
    ):
        with ui.user_errors("The new version could not be written"):
            folder = data_versions.write_version(manifest, changes)
            st.session_state[f"evaluate_new_version_{run.id}"] = str(folder)
    new = st.session_state.get(f"evaluate_new_version_{run.id}")
    if new and Path(new).exists():
        st.success(f"Written: `{ui.plain(Path(new).name)}`. Train on it to see whether the model does better.")
        if st.button("Train on the new version", key="evaluate_train_version"):
            ui.prepare_training(new, run.config["backbone"], _same_split(run), weights=run.config["weights"])


@st.cache_resource(show_spinner=False, max_entries=4)
def _pretrained_points(run_dir: str, weights_mtime: float) -> list[dict]:
    manifest, features, config = _run_features(run_dir, weights_mtime)
    return efficiency.pretrained_points(manifest, features, seed=config["seed"])


def transfer_section(run, runs: list) -> None:
    st.subheader("What pretraining bought")
    if run.config.get("weights") == "none":
        st.caption("This run itself started from random weights; pick a pretrained run to compare with it.")
        return
    twins = [r for r in runs if efficiency.is_scratch_twin(r.config, run.config)]
    scratch = {float(r.config.get("train_share", 1.0)): r for r in twins}
    queued = {round(float(j.config.train_share), 2) for j in _scratch_jobs(run)}
    c1, c2 = st.columns(2)
    if c1.button(
        "Train the same from random weights",
        key="evaluate_scratch",
        disabled=1.0 in scratch or 1.0 in queued,
        help=f"The same backbone, pictures and settings, every block training from random weights, for at least "
        f"{efficiency.SCRATCH_EPOCHS} epochs. It queues as a background job.",
    ):
        _queue_scratch(run, [1.0])
    if c2.button(
        "Measure accuracy against the share of pictures",
        key="evaluate_efficiency",
        help="Pretrained heads on 10, 25, 50 and 100% of the training pictures (seconds), and from-scratch runs on "
        "the same shares (queued as background jobs).",
    ):
        st.session_state[f"evaluate_efficiency_{run.id}"] = True
        _queue_scratch(run, [s for s in efficiency.SHARES if s not in scratch and s not in queued])
    if queued:
        st.info(f"{len(queued)} from-scratch run(s) queued or training; their results appear here when they end.")
    if 1.0 in scratch:
        other = scratch[1.0]
        pretrained_epochs = [e for e in read_metrics(run.run_dir) if e.get("event") == "epoch"]
        scratch_epochs = [e for e in read_metrics(other.run_dir) if e.get("event") == "epoch"]
        ui.chart(
            st,
            compare_curves_figure({"pretrained (this run)": pretrained_epochs, "from random weights": scratch_epochs}),
            key="evaluate_transfer_curves",
        )
        st.markdown(
            f"Pretrained: **{ui.pct(run.summary.get('best_val_accuracy'))}** in "
            f"{ui.duration(run.summary.get('train_seconds'))}; from random weights: "
            f"**{ui.pct(other.summary.get('best_val_accuracy'))}** in {ui.duration(other.summary.get('train_seconds'))} "
            f"({other.summary.get('epochs_run')} epochs)."
        )
    if st.session_state.get(f"evaluate_efficiency_{run.id}"):
        points = _analysis(
            run,
            "The pretrained points could not be measured",
            "Fitting heads on shares of the pictures...",
            _pretrained_points,
        )
        if points:
            scratch_points = [
                {"share": s, "num_train": r.summary.get("num_train"), "accuracy": r.summary.get("best_val_accuracy")}
                for s, r in scratch.items()
            ]
            ui.chart(st, efficiency_figure(points, scratch_points), key="evaluate_efficiency_chart")
            said = efficiency.sentence(points, {p["share"]: p["accuracy"] for p in scratch_points})
            if said:
                st.markdown(f"**{said}**")
            st.dataframe(
                [{"share": f"{p['share']:.0%}", "pictures": p["num_train"], "pretrained": ui.pct(p["accuracy"]),
                  "from scratch": ui.pct(scratch[p["share"]].summary.get("best_val_accuracy"))
                  if p["share"] in scratch else "queued" if p["share"] in queued else ""}
                 for p in points],
                hide_index=True,
                key="evaluate_efficiency_table",
            )  # fmt: skip


def _scratch_jobs(run) -> list:
    """The from-scratch twins of `run` queued or training now."""
    return [
        j
        for j in ui.job_manager().active_jobs()
        if j.config.weights == "none"
        and (j.config.data_dir, j.config.backbone) == (run.config["data_dir"], run.config["backbone"])
    ]


def _queue_scratch(run, shares: list[float]) -> None:
    with ui.user_errors("The from-scratch run could not start"):
        for share in shares:
            ui.job_manager().submit(efficiency.scratch_config(run.config, share), None, f"{run.title}, from scratch")
        st.rerun()


def compare_section(run, runs: list) -> None:
    others = [r for r in runs if r.run_dir != run.run_dir]
    if not others:
        return
    st.subheader("Compare runs")
    by_dir = {str(r.run_dir): r for r in others}
    picked = st.multiselect(
        "Runs to set beside this one",
        list(by_dir),
        format_func=lambda d: ui.run_label(by_dir[d]),
        key="evaluate_compare",
        help="For example the same data with and without pretraining, or with more blocks trained.",
    )
    if not picked:
        return
    chosen = [run] + [by_dir[d] for d in picked]
    rows = []
    for r in chosen:
        row = {
            "run": r.title,
            "best validation accuracy": ui.pct(r.summary.get("best_val_accuracy")),
            "training time": ui.duration(r.summary.get("train_seconds")),
            "epochs": r.summary.get("epochs_run"),
        }
        with ui.user_errors(f"Run {r.id} cannot be compared"):
            for per_class in evaluate_run(r.run_dir, operating_point.read_rule(r.run_dir)).per_class:
                row[f"finds {per_class['class']}"] = ui.pct(per_class["recall"])
        rows.append(row)
    st.dataframe(rows, hide_index=True, key="evaluate_compare_table")
    st.caption("'finds X' is the recall of class X: the share of its validation pictures the run labels X.")
    titles = [r.title for r in chosen]
    curves = {
        (r.title if titles.count(r.title) == 1 else f"{r.title} ({r.id[-4:]})"): [
            e for e in read_metrics(r.run_dir) if e.get("event") == "epoch"
        ]
        for r in chosen
    }  # two runs started in the same minute keep a curve each
    ui.chart(st, compare_curves_figure(curves), key="evaluate_compare_curves")

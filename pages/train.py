"""Train: how much of the backbone to retrain, a few settings, Start; then the job's progress and curves, live."""

import streamlit as st

from pages import _common as ui
from tl_core.auto import BUDGETS
from tl_core.backbones import CATALOGUE, label_for, offline_weights_file
from tl_core.config import TrainConfig
from tl_core.events import STAGE_LABELS
from tl_core.freezing import top_third_frozen
from tl_core.plots import accuracy_figure, freeze_strip, loss_figure, lr_figure, probe_figure

ui.header(
    "3. Train",
    "Choose how much of the pretrained network to retrain, press Start, and watch it learn your classes.",
)

QUICK_BACKBONE = "tf_efficientnet_lite0"
DEPTH = "train_freeze_depth"  # the freeze depth the next run uses
IMG_SIZES = [64, 96, 128, 160, 192, 224, 240, 256, 260, 288, 320]
DEFAULTS = TrainConfig.defaults()
STRATEGIES = {
    "feature": "Feature extraction",
    "top": "Fine-tune the top",
    "all": "Fine-tune all",
}
MODES = {"auto": "Auto: the best model within a time budget", "manual": "Manual: choose how much to retrain"}


def strategy_help(structure) -> str:
    """What each strategy retrains on this backbone, with its own numbers (the last third of the blocks can hold
    most of the parameters: EfficientNet's last blocks are its widest)."""
    total = structure.total_blocks

    def share(depth: int) -> str:
        plan = structure.at_depth(depth)
        return f"{ui.millions(plan.trainable_params)} of its {ui.millions(plan.total_params)} parameters"

    top = top_third_frozen(total)
    return (
        f"Feature extraction: the pretrained network stays as it is and only a new final layer (the 'head') learns "
        f"your classes ({share(total)}); fastest, good with few pictures. Fine-tune the top: the last {total - top} "
        f"of its {total} blocks learn too ({share(top)}: the blocks near the output are the widest). Fine-tune "
        f"all: every block learns ({share(0)}); best with many pictures and a GPU."
    )


dataset = ui.current_dataset()
backbone = ui.chosen_backbone()
weights = ui.chosen_weights()
manifest = None
if dataset is not None:
    with ui.user_errors("Your data set cannot be used"):
        manifest = ui.scan(dataset["path"], *ui.split_settings())
num_classes = len(manifest.class_names) if manifest is not None else 2


def depth_for(strategy: str, total: int) -> int:
    return {"feature": total, "top": top_third_frozen(total), "all": 0}[strategy]


def strategy_for(depth: int, total: int) -> str | None:
    return next((s for s in STRATEGIES if depth_for(s, total) == depth), None)


def config_setting(widget, label: str, name: str, default=None, **kwargs):
    """A widget for the TrainConfig field `name`: keyed train_<name>, starting from what this browser chose last
    (after a refresh or in a second tab), else from `default`, else from the config's own default."""
    key = f"train_{name}"
    value = ui.restored(key, DEFAULTS[name] if default is None else default)
    if widget.__name__ in ("radio", "selectbox"):  # these take the position of their value
        options = kwargs["options"]
        kwargs["index"] = options.index(value) if value in options else 0
    else:
        kwargs["value"] = value
    return widget(label, key=key, persist_state="session", **kwargs)


def make_config(depth: int, **overrides) -> TrainConfig:
    """The TrainConfig the widgets describe: every field that has a train_<field> widget, then the overrides."""
    values = {name: st.session_state[f"train_{name}"] for name in DEFAULTS if f"train_{name}" in st.session_state}
    values.update(backbone=backbone, weights=weights, freeze=depth, runs_dir=str(ui.runs_dir()))
    return TrainConfig(data_dir=dataset["path"], **{**values, **overrides})


# ---------------------------------------------------------------- settings
def device_setting(one_process_because: str, num_train: int) -> None:
    """Where to train: each count of this server's GPUs, or its CPU. Several GPUs train as one run under torchrun
    (DDP): the choice sets the run's device and number of processes (one, when `one_process_because` says why)."""
    choices = ui.device_choices()
    labels = [c.label for c in choices]
    remembered = ui.restored("train_device_choice", labels[0])
    label = st.columns(2)[0].selectbox(
        "Train on",
        labels,
        index=labels.index(remembered) if remembered in labels else 0,
        key="train_device_choice",
        persist_state="session",
        help="Several GPUs (or processes) train one model together: each step's pictures are shared out between "
        "them, and the gradients averaged (PyTorch DDP, started by torchrun). Worth it for many pictures or a large "
        "backbone; a small run starts faster on one. With no GPU, two processes share the CPU's cores: each step is "
        "faster (a quarter faster on 2 cores), and the start takes a few seconds longer.",
    )
    choice = choices[labels.index(label)]
    processes = 1 if one_process_because else choice.processes
    st.session_state["train_device"], st.session_state["train_processes"] = choice.device, processes
    if choice.processes > 1 and one_process_because:
        st.caption(one_process_because)
    elif processes > 1:
        batch = min(st.session_state.get("train_batch_size", DEFAULTS["batch_size"]), max(num_train, 1))
        st.caption(
            f"{processes} processes: each step's {batch} pictures (the batch size above) are shared out between "
            f"them, about {batch // processes} each."
        )


# While a job runs (or just ended), its progress comes first and the settings for the next one below it.
live_first = ui.job_to_show() is not None
if live_first:
    live_col, setup = st.container(key="train_live"), st.container()
else:
    setup, live_col = st.container(), st.container(key="train_live")
# The live view redraws every few seconds; a CSS transition on each redraw (the progress bar glides for 0.5 s, stale
# elements fade) makes the browser repaint at 60 frames/s in between, and on a CPU-only machine that time comes out of
# training. The updates stay; the gliding goes (docs/BENCHMARKS.md, "The live page's cost").
st.html("<style>.st-key-train_live * { transition: none !important; animation: none !important; }</style>")
with setup:
    if dataset is None:
        ui.needs("No data set yet: training needs pictures sorted into one folder per class.", "data", "Go to 1. Data")
    else:
        summary_line = f"**Data:** {dataset['origin']}"
        if manifest is not None:
            summary_line += f" · {len(manifest.samples)} pictures in {num_classes} classes"
        st.markdown(
            summary_line + f" · **Backbone:** {label_for(backbone)} ({weights} weights) · **Device:** "
            f"{ui.device_description()}"
        )
        st.page_link(ui.PAGES["model"].path, label="Change the backbone", icon=":material/account_tree:")

    structure = ui.attempt(f"The structure of '{backbone}' could not be read", ui.freeze_plan, backbone, num_classes)
    if structure is None:
        st.stop()
    total = structure.total_blocks
    if st.session_state.get("train_depth_backbone") != backbone:  # a new backbone: start from its preset
        st.session_state["train_depth_backbone"] = backbone
        st.session_state[DEPTH] = total
    st.session_state[DEPTH] = min(int(st.session_state.get(DEPTH, total)), total)
    # The strategy buttons and the slider both show the one depth (a plain session key). Each widget writes only
    # that depth and re-creates the other one under a new key: a stale value the browser still holds for the other
    # widget can then never flip the choice back (it did when a strategy click was followed at once by a change).
    generation = st.session_state.setdefault("train_depth_widgets", {"strategy": 0, "slider": 0})
    strategy_key, slider_key = f"train_strategy_{generation['strategy']}", f"train_depth_{generation['slider']}"

    def on_strategy() -> None:
        picked = st.session_state.get(strategy_key)
        if picked:
            st.session_state[DEPTH] = depth_for(picked, total)
            generation["slider"] += 1

    def on_depth() -> None:
        st.session_state[DEPTH] = st.session_state[slider_key]
        generation["strategy"] += 1

    st.subheader("How to train")
    mode = config_setting(
        st.radio,
        "How to train",
        "strategy",
        default="auto",
        options=list(MODES),
        format_func=MODES.get,
        horizontal=True,
        label_visibility="collapsed",
    )
    if mode == "auto":
        config_setting(
            st.radio,
            "Time budget",
            "budget",
            default="10m",
            options=list(BUDGETS),
            format_func=BUDGETS.get,
            horizontal=True,
            help="About how long Auto may take on this computer. The fitted head comes first and takes seconds.",
        )
        st.caption(
            "Auto fits a new head on the pretrained network first (seconds, and already a finished model), then, if "
            "the budget allows it on this computer, fine-tunes the last blocks or all of them, for as many epochs as "
            "fit, and keeps the better of the two models. It says what it chose and why."
        )
        depth = total
    else:
        st.subheader("How much to retrain")
        st.segmented_control(
            "Strategy",
            list(STRATEGIES),
            format_func=STRATEGIES.get,
            default=strategy_for(st.session_state[DEPTH], total),
            key=strategy_key,
            on_change=on_strategy,
            help=strategy_help(structure),
        )
        depth = st.slider(
            f"Frozen blocks (of {total}, counted from the input)",
            0,
            total,
            value=st.session_state[DEPTH],
            key=slider_key,
            on_change=on_depth,
            help="Frozen blocks keep their pretrained values; the blocks after them, and the new head, learn.",
        )
        plan = structure.at_depth(depth)
        blocks = [(b.name, b.num_params) for b in plan.blocks]
        st.plotly_chart(
            freeze_strip(blocks, depth, plan.head_params), key="train_strip", config={"displayModeBar": False}
        )
        c1, c2, c3 = st.columns(3)
        c1.metric("Blocks frozen", f"{depth} of {total}", help="Grey in the strip above; input on the left.")
        c2.metric("Trainable parameters", ui.millions(plan.trainable_params), help="Numbers the training will change.")
        c3.metric(
            "Total parameters",
            ui.millions(plan.total_params),
            help=f"{plan.trainable_params / plan.total_params:.1%} of them will train.",
        )

    st.subheader("Settings")
    spec = CATALOGUE.get(backbone)
    default_size = spec.input_size if spec else 224

    # Feature extraction with the probe (the defaults): the head is fitted to its optimum in one go, so the settings
    # of training by epochs do nothing and are shown off, with the reason.
    def chosen(name: str):
        return st.session_state.get(f"train_{name}", ui.restored(f"train_{name}", DEFAULTS[name]))

    head_fitted = depth == total and chosen("augment") != "on" and chosen("feature_cache") and chosen("probe")
    by_epochs_only = (
        "Auto chooses the epochs (and the learning rate follows them), so this does not apply. "
        if mode == "auto"
        else "Feature extraction fits the head to its optimum in one go, so this does not apply. "
        if head_fitted
        else ""
    )
    head_fitted = head_fitted or mode == "auto"  # either way, these settings are Headstart's to choose
    s1, s2, s3 = st.columns(3)
    config_setting(
        s1.number_input,
        "Epochs",
        "epochs",
        min_value=1,
        max_value=500,
        disabled=head_fitted,
        help=by_epochs_only
        + "One epoch = every training picture seen once. Training stops early when validation stops improving.",
    )
    config_setting(
        s2.select_slider,
        "Image size (px)",
        "img_size",
        default=default_size,
        options=sorted(set(IMG_SIZES + [default_size])),
        help="Pictures are resized to this square. Smaller trains faster; the backbone's own size is usually best.",
    )
    config_setting(
        s3.select_slider,
        "Batch size",
        "batch_size",
        options=[4, 8, 16, 32, 64, 128],
        help="Pictures per training step. Lower it if the computer runs out of memory.",
    )
    device_setting(
        "Auto decides as it goes from the time each step takes, so it trains in one process."
        if mode == "auto"
        else "Feature extraction fits the head in seconds: one process does it; starting several would take longer."
        if head_fitted
        else "",
        len(manifest.split("train")) if manifest is not None else 0,
    )
    with st.expander("Advanced"):
        a1, a2, a3 = st.columns(3)
        config_setting(
            a1.select_slider,
            "Learning rate",
            "lr",
            options=[None, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
            format_func=lambda v: "auto" if v is None else f"{v:g}",
            disabled=head_fitted,
            help=by_epochs_only
            + "How big each learning step is. Auto: 3e-5 when blocks fine-tune from the fitted head; 1e-3 from a "
            "zero head (which takes 3x bigger steps).",
        )
        config_setting(
            a2.radio,
            "Augmentation",
            "augment",
            options=["auto", "on", "off"],
            horizontal=True,
            help="Random crops and flips so the model sees varied pictures. Auto: on when the backbone trains.",
        )
        config_setting(
            a2.radio,
            "Mirror images at prediction",
            "tta",
            options=["auto", "on", "off"],
            horizontal=True,
            help="Test-time augmentation: label each picture from itself and its mirror image together. Auto: only "
            "if that labels the validation pictures better (mirroring misleads on text or left/right anatomy).",
        )
        config_setting(
            a3.slider,
            "Label smoothing",
            "label_smoothing",
            min_value=0.0,
            max_value=0.3,
            step=0.05,
            help="Keeps the model from becoming over-confident.",
        )
        config_setting(
            a1.slider,
            "Validation share",
            "val_split",
            min_value=0.05,
            max_value=0.5,
            step=0.05,
            help="Share of each class kept aside to measure accuracy (ignored when your data has train/ and val/).",
        )
        config_setting(
            a2.slider,
            "Test share",
            "test_split",
            min_value=0.0,
            max_value=0.4,
            step=0.05,
            help="Share kept aside and measured only once, at the end, with the best weights.",
        )
        config_setting(
            a3.number_input,
            "Seed",
            "seed",
            min_value=0,
            max_value=1_000_000,
            help="Same seed, same split and same result.",
        )
        config_setting(a1.number_input, "Weight decay", "weight_decay", min_value=0.0, max_value=1.0, step=0.01)
        config_setting(
            a2.number_input,
            "Warm-up epochs",
            "warmup_epochs",
            min_value=0.0,
            max_value=10.0,
            step=0.5,
            help="The learning rate grows from near zero over these epochs, then decays.",
        )
        config_setting(
            a3.number_input,
            "Early stopping (epochs without progress, 0 = off)",
            "early_stopping",
            min_value=0,
            max_value=100,
        )
        config_setting(
            a1.select_slider,
            "Layer-wise learning rate decay",
            "layer_decay",
            options=[None, 0.9, 0.8, 0.75, 0.65, 0.5],
            format_func=lambda v: "off" if v is None else f"{v:g}",
            help="Blocks further from the head learn more slowly (0.75: each block 0.75x the next).",
        )
        config_setting(
            a2.toggle,
            "Class-balanced loss",
            "class_balanced",
            help="Every class counts equally, however many pictures it has.",
        )
        config_setting(
            a3.toggle,
            "Feature cache",
            "feature_cache",
            help="When the whole backbone is frozen and augmentation is off, compute its features once and reuse them.",
        )
        config_setting(
            a1.toggle,
            "Fit the head to its optimum",
            "probe",
            help="Fit the new head on the pretrained features to its optimum (L-BFGS; its regularisation chosen by "
            "cross-validation on the training pictures). Feature extraction: that is the whole training, in seconds. "
            "When blocks train, they start from this head (linear probe, then fine-tune). Off: the head starts from "
            "zero and trains by epochs.",
        )
        on_gpu = ui.device_type() == "cuda"
        config_setting(
            a2.toggle,
            "Compile the model",
            "compile",
            disabled=not on_gpu,
            help="torch.compile: a minute of compiling that pays on long GPU runs (GPU only).",
        )

    ready = dataset is not None and manifest is not None
    quick_weights = "offline" if offline_weights_file(QUICK_BACKBONE) else "auto"
    configs = {}
    if ready:
        with ui.user_errors("These settings cannot be used"):
            configs = {
                "train_start": make_config(depth),
                "train_quick": make_config(
                    DEFAULTS["freeze"],
                    strategy="manual",
                    backbone=QUICK_BACKBONE,
                    weights=quick_weights,
                    augment="off",
                    feature_cache=True,
                    processes=1,  # a head fitted in seconds: not worth starting processes for
                ),
            }
    # One click, one job: a button whose exact training is already queued or running is off, and says where it is.
    already = {key: ui.job_manager().find_active(config) for key, config in configs.items()}
    b1, b2 = st.columns(2)
    clicked = b1.button(
        "Start training",
        type="primary",
        key="train_start",
        disabled=not configs or bool(already["train_start"]),
        width="stretch",
    )
    clicked_quick = b2.button(
        "Quick model",
        key="train_quick",
        disabled=not configs or bool(already["train_quick"]),
        icon=":material/bolt:",
        width="stretch",
        help=f"One click: {label_for(QUICK_BACKBONE)} ({quick_weights} weights), backbone frozen, no augmentation. "
        "Its features are computed once and cached, and the new head is fitted to its optimum on them: seconds, "
        "even on a CPU.",
    )
    for key, clicked_now in (("train_start", clicked), ("train_quick", clicked_quick)):
        if clicked_now and not already[key]:
            with ui.user_errors("Training could not start"):
                job = ui.job_manager().submit(configs[key], manifest, dataset["origin"])
                st.session_state[ui.JOB] = job.id
                st.session_state["train_submitted"] = job.id
                st.rerun()
    submitted = ui.job_manager().get(st.session_state.get("train_submitted", ""))
    if submitted is not None and submitted.snapshot().active:
        st.success(
            f"Started: job {submitted.id} is {submitted.snapshot().state}. Its progress is at the top of this page, "
            "and on Home from any tab.",
            icon=":material/check_circle:",
        )
    elif any(already.values()):
        st.caption("This exact training is already queued or running: its progress is at the top of this page.")
    if not ready:
        st.caption("Start needs a usable data set (page 1).")


# ---------------------------------------------------------------- the live view
def progress_text(snap) -> str:
    parts = [f"Epoch {snap.epoch}/{snap.epochs}", f"step {snap.step}/{snap.total_steps}"]
    if not snap.active:
        took = (snap.summary or {}).get("train_seconds")
        return " · ".join([f"Done: {len(snap.history)} epoch(s)", f"{snap.step} steps", f"{ui.duration(took)}"])
    if snap.eta_seconds is not None:
        parts.append(f"about {ui.duration(snap.eta_seconds)} left")
    parts.append(f"{snap.images_per_second:.1f} images/s")
    return " · ".join(parts)


def show_progress(snap) -> None:
    cfg = snap.config
    start = snap.start_info  # known once the model is built: the freeze depth as it runs
    frozen = f"{start['frozen_blocks']}/{start['total_blocks']} blocks frozen" if start else f"freeze {cfg['freeze']}"
    fitted = start.get("feature_cache") and cfg.get("probe")  # the head fitted in one go: no epochs
    how_long = "head fitted to its optimum" if fitted else f"{cfg['epochs']} epochs"
    if cfg.get("strategy") == "auto":
        how_long = f"Auto, {BUDGETS.get(cfg.get('budget') or 'best', cfg.get('budget'))}: now " + how_long
    what = f"{label_for(cfg['backbone'])}, {how_long}, {frozen}"
    state = "stopping at the next step..." if snap.stopping else snap.state
    processes = snap.config.get("processes", 1)
    where = snap.device if processes == 1 else f"{processes} × {snap.device} together (DDP)"
    st.markdown(f"**{snap.id}** · {what} · on {where} · **{state}**")
    if snap.state == "queued":
        st.info(
            f"Waiting: {snap.queue_position} job(s) ahead of this one on {snap.device}. It starts by itself; you can "
            "leave this page.",
            icon=":material/hourglass_top:",
        )
    elif snap.state == "running" and snap.stage != "train":
        label = STAGE_LABELS.get(snap.stage, "Preparing")
        done, tot = snap.stage_done, snap.stage_total
        st.progress(done / tot if tot else 0.0, text=f"{label}: {done}/{tot}" if tot else f"{label}...")
    elif snap.active or snap.history:
        st.progress(snap.fraction_done, text=progress_text(snap))
    if snap.active and st.button("Stop", key="train_stop", icon=":material/stop_circle:", disabled=snap.stopping):
        ui.job_manager().get(snap.id).stop()
        st.rerun()  # redraw at once as "stopping...", not at the next timer tick


def show_curves(snap) -> None:
    used_cache = (snap.summary or {}).get("feature_cache", snap.start_info.get("feature_cache"))
    if used_cache:
        st.info(
            "Fast path: the backbone is frozen and augmentation is off, so its features are computed once and "
            "cached on disk; only the new head learns"
            + (", fitted to its optimum on them." if snap.config.get("probe") else ", by epochs on them."),
            icon=":material/bolt:",
        )
    for message in snap.messages:
        st.caption(message)

    history = snap.history
    m1, m2, m3, m4 = st.columns(4)
    best = max((h["val_accuracy"] for h in history), default=None)
    m1.metric(
        "Best validation accuracy",
        ui.pct(best),
        help="Share of the held-out pictures the model labels right (best epoch so far).",
    )
    m2.metric(
        "Validation loss",
        f"{history[-1]['val_loss']:.3f}" if history else "n/a",
        help="How wrong it is on held-out pictures; should go down.",
    )
    fitted_in_one_go = bool(history) and not snap.lr_schedule
    if fitted_in_one_go:
        m3.metric("Training", "head fitted in one go", help="L-BFGS to the optimum on the cached features: no epochs.")
    else:
        m3.metric("Epochs done", f"{len(history)} of {snap.epochs}")
    # A fitted head takes no steps: its speed is the training pictures over the seconds the fit took (its epoch's).
    speed = snap.images_per_second or (history[-1]["images_per_second"] if history else 0.0)
    m4.metric("Speed", ui.speed(speed), help="Training pictures per second.")

    if fitted_in_one_go:  # no steps, no epochs to draw: what the fit weighed instead, and the words why
        probe = (snap.summary or {}).get("probe") or {}
        k1, k2 = st.columns([2, 1])
        if probe.get("tried"):
            ui.chart(k1, probe_figure(probe["tried"], probe["penalty"]), key="train_probe_chart")
        k2.caption(
            "No loss or learning-rate curves: the head was fitted in one go (L-BFGS, to its optimum on the "
            "pretrained features), without training steps. The chart shows each regularisation strength tried by "
            "cross-validation and the one chosen; the table below has the numbers."
        )
        return
    spe = snap.total_steps / snap.epochs if snap.total_steps and snap.epochs else 1.0
    k1, k2, k3 = st.columns(3)
    ui.chart(k1, loss_figure(snap.step_losses, history, spe, snap.total_steps), key="train_loss_chart")
    ui.chart(k2, accuracy_figure(history, snap.epochs), key="train_accuracy_chart")
    ui.chart(k3, lr_figure(snap.lr_schedule, round(len(history) * spe)), key="train_lr_chart")
    if snap.active:
        st.caption(
            f"Curves as of step {snap.step:,} of {snap.total_steps or 0:,}. They redraw every {ui.CURVES_REFRESH_S:g} s "
            f"and the progress bar every {ui.LIVE_REFRESH_S:g} s, so that drawing leaves the processor to training."
        )


def show_outcome(snap) -> None:
    if snap.state == "finished":
        st.success((snap.summary or {}).get("message") or "Training finished.", icon=":material/check_circle:")
    elif snap.state == "stopped":
        st.warning((snap.summary or {}).get("message") or "Stopped on request.")
    elif snap.state == "cancelled":
        st.warning("Cancelled before it started.")
    elif snap.state == "failed":
        st.error(f"Training failed: {ui.plain(snap.error)}")
    if snap.state in ("finished", "stopped") and snap.run_dir and (snap.summary or {}).get("epochs_run"):
        if snap.id == st.session_state.get(ui.JOB):
            st.session_state[ui.RUN] = snap.run_dir
        summary = snap.summary or {}
        st.caption(
            f"The last epoch reached {ui.pct(summary.get('val_accuracy'))} validation accuracy"
            f" · trained in {ui.duration(summary.get('train_seconds'))}"
            + (
                f" · test accuracy {ui.pct(summary['test_accuracy'])}"
                if summary.get("test_accuracy") is not None
                else ""
            )
        )
        probe = summary.get("probe") or {}
        if probe.get("tried"):
            with st.expander("How the head was fitted: the regularisation strengths tried"):
                st.caption(
                    f"Each strength was fitted on {probe['folds'] - 1} of {probe['folds']} parts of the training "
                    "pictures and scored on the part left out, in turn; the best score was kept, then fitted on all."
                )
                st.dataframe(
                    [
                        {
                            "penalty": t["penalty"],
                            "held-out accuracy": ui.pct(t["cv_accuracy"]),
                            "held-out loss": round(t["cv_loss"], 3),
                            "chosen": "yes" if t["penalty"] == probe["penalty"] else "",
                        }
                        for t in probe["tried"]
                    ],
                    hide_index=True,
                    key="train_probe_table",
                )
        ui.next_step("see where the model is right and wrong.", "evaluate", "Go to 4. Evaluate")


def show_other_jobs(job_id: str) -> None:
    others = [j.snapshot() for j in ui.job_manager().jobs() if j.id != job_id]
    if not others:
        return
    here = str(ui.runs_dir())
    with st.expander(f"Other jobs on this server ({len(others)})"):
        st.caption("Jobs of other workspaces show only their place in the queue.")
        st.dataframe(
            [
                {
                    "job": o.id if o.config["runs_dir"] == here else "another workspace's",
                    "state": o.state,
                    "backbone": label_for(o.config["backbone"]),
                    "queue position": o.queue_position if o.state == "queued" else None,
                    "best validation accuracy": ui.pct(max((h["val_accuracy"] for h in o.history), default=None))
                    if o.config["runs_dir"] == here
                    else "",
                }
                for o in others
            ],
            hide_index=True,
            key="train_other_jobs",
        )


job = ui.job_to_show()
is_active = job is not None and job.snapshot().active
st.session_state["train_live_active"] = is_active


# Two refresh rates, because every redraw takes CPU from training when the browser shares the machine: a progress
# update costs the browser ~35 ms (React re-renders the page) and three changed plotly charts ~280 ms, so the progress
# line moves every 2 s and the curves every 10 s. A job that starts or ends reruns the whole page, turning both on/off.
@st.fragment(run_every=ui.LIVE_REFRESH_S if is_active else None)
def live_progress() -> None:
    current = ui.job_to_show()
    if current is None:
        st.info("No training on this server yet. Press Start (or Quick model) above.")
        return
    snap = current.snapshot()
    if snap.active != st.session_state.get("train_live_active"):
        st.session_state["train_live_active"] = snap.active
        st.rerun()
    show_progress(snap)


@st.fragment(run_every=ui.CURVES_REFRESH_S if is_active else None)
def live_curves() -> None:
    current = ui.job_to_show()
    if current is None:
        return
    snap = current.snapshot()
    show_curves(snap)
    show_other_jobs(snap.id)
    if not snap.active:  # drawn by the fragment, so whichever run draws last (page or fragment) shows it
        show_outcome(snap)


with live_col:
    if not live_first:
        st.divider()
    st.subheader("Progress")
    live_progress()
    live_curves()
    if live_first:
        st.divider()
        st.subheader("Next training")

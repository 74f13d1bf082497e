"""Train: how much of the backbone to retrain, a few settings, Start; then the job's progress and curves, live."""

import streamlit as st

from pages import _common as ui
from tl_core.backbones import CATALOGUE, label_for, offline_weights_file
from tl_core.plots import accuracy_figure, freeze_strip, loss_figure, lr_figure
from tl_core.training import TrainConfig

ui.header(
    "3. Train",
    "Choose how much of the pretrained network to retrain, press Start, and watch it learn your classes.",
)

QUICK_BACKBONE = "tf_efficientnet_lite0"
IMG_SIZES = [64, 96, 128, 160, 192, 224, 240, 256, 260, 288, 320]
STRATEGIES = {
    "feature": "Feature extraction",
    "top": "Fine-tune the top",
    "all": "Fine-tune all",
}
STRATEGY_HELP = (
    "Feature extraction: the pretrained network stays as it is and only a new final layer (the 'head') learns "
    "your classes; fastest, good with few pictures. Fine-tune the top: the last third of the network adapts too. "
    "Fine-tune all: every layer adapts; best with many pictures and a GPU."
)

dataset = ui.current_dataset()
backbone = ui.chosen_backbone()
weights = ui.chosen_weights()
manifest = None
if dataset is not None:
    val_split, test_split, seed = ui.split_settings()
    with ui.user_errors("Your data set cannot be used"):
        manifest = ui.scan(dataset["path"], val_split, test_split, seed)
num_classes = len(manifest.class_names) if manifest is not None else 2


def depth_for(strategy: str, total: int) -> int:
    return {"feature": total, "top": total - max(1, round(total / 3)), "all": 0}[strategy]


def strategy_for(depth: int, total: int) -> str | None:
    return next((s for s in STRATEGIES if depth_for(s, total) == depth), None)


# ---------------------------------------------------------------- settings
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
        st.page_link(ui.PAGES["model"], label="Change the backbone", icon=":material/account_tree:")

    structure = ui.attempt(
        f"The structure of '{backbone}' could not be read", ui.backbone_blocks, backbone, num_classes
    )
    if structure is None:
        st.stop()
    blocks, head_params = structure
    total = len(blocks)
    depth_key = "train_freeze_depth"
    if st.session_state.get("train_depth_backbone") != backbone:  # a new backbone: start from its preset
        st.session_state["train_depth_backbone"] = backbone
        st.session_state["train_strategy"] = "feature"
        st.session_state[depth_key] = total
    st.session_state[depth_key] = min(int(st.session_state.get(depth_key, total)), total)

    def on_strategy() -> None:
        picked = st.session_state.get("train_strategy")
        if picked:
            st.session_state[depth_key] = depth_for(picked, total)

    def on_depth() -> None:
        st.session_state["train_strategy"] = strategy_for(st.session_state[depth_key], total)

    st.subheader("How much to retrain")
    st.segmented_control(
        "Strategy",
        list(STRATEGIES),
        format_func=STRATEGIES.get,
        key="train_strategy",
        on_change=on_strategy,
        help=STRATEGY_HELP,
    )
    depth = st.slider(
        f"Frozen blocks (of {total}, counted from the input)",
        0,
        total,
        key=depth_key,
        on_change=on_depth,
        help="Frozen blocks keep their pretrained values; the blocks after them, and the new head, learn.",
    )
    st.plotly_chart(freeze_strip(blocks, depth, head_params), key="train_strip", config={"displayModeBar": False})
    trainable = head_params + sum(n for _, n in blocks[depth:])
    everything = head_params + sum(n for _, n in blocks)
    c1, c2, c3 = st.columns(3)
    c1.metric("Blocks frozen", f"{depth} of {total}", help="Grey in the strip above; input on the left.")
    c2.metric("Trainable parameters", ui.millions(trainable), help="Numbers the training will change.")
    c3.metric("Total parameters", ui.millions(everything), help=f"{trainable / everything:.1%} of them will train.")

    st.subheader("Settings")
    spec = CATALOGUE.get(backbone)
    default_size = spec.input_size if spec else 224
    s1, s2, s3 = st.columns(3)
    epochs = s1.number_input(
        "Epochs",
        min_value=1,
        max_value=500,
        value=10,
        key="train_epochs",
        persist_state="session",
        help="One epoch = every training picture seen once. Training stops early when validation stops improving.",
    )
    img_size = s2.select_slider(
        "Image size (px)",
        options=sorted(set(IMG_SIZES + [default_size])),
        value=default_size,
        key="train_img_size",
        persist_state="session",
        help="Pictures are resized to this square. Smaller trains faster; the backbone's own size is usually best.",
    )
    batch_size = s3.select_slider(
        "Batch size",
        options=[4, 8, 16, 32, 64, 128],
        value=32,
        key="train_batch",
        persist_state="session",
        help="Pictures per training step. Lower it if the computer runs out of memory.",
    )
    with st.expander("Advanced"):
        a1, a2, a3 = st.columns(3)
        lr = a1.select_slider(
            "Learning rate",
            options=["auto", 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
            value="auto",
            key="train_lr",
            persist_state="session",
            help="How big each learning step is. Auto: 1e-3 (the new head takes 3x bigger steps when more layers train).",
        )
        augment = a2.radio(
            "Augmentation",
            ["auto", "on", "off"],
            key="train_augment",
            persist_state="session",
            horizontal=True,
            help="Random crops and flips so the model sees varied pictures. Auto: on when the backbone trains.",
        )
        label_smoothing = a3.slider(
            "Label smoothing",
            0.0,
            0.3,
            0.1,
            0.05,
            key="train_label_smoothing",
            persist_state="session",
            help="Keeps the model from becoming over-confident.",
        )
        a1.slider(
            "Validation share",
            0.05,
            0.5,
            0.2,
            0.05,
            key="train_val_split",
            persist_state="session",
            help="Share of each class kept aside to measure accuracy (ignored when your data has train/ and val/).",
        )
        a2.slider(
            "Test share",
            0.0,
            0.4,
            0.0,
            0.05,
            key="train_test_split",
            persist_state="session",
            help="Share kept aside and measured only once, at the end, with the best weights.",
        )
        a3.number_input(
            "Seed",
            0,
            1_000_000,
            0,
            key="train_seed",
            persist_state="session",
            help="Same seed, same split and same result.",
        )
        weight_decay = a1.number_input(
            "Weight decay", 0.0, 1.0, 0.05, 0.01, key="train_weight_decay", persist_state="session"
        )
        warmup = a2.number_input(
            "Warm-up epochs",
            0.0,
            10.0,
            1.0,
            0.5,
            key="train_warmup",
            persist_state="session",
            help="The learning rate grows from near zero over these epochs, then decays.",
        )
        early = a3.number_input(
            "Early stopping (epochs without progress, 0 = off)", 0, 100, 5, key="train_early", persist_state="session"
        )
        layer_decay = a1.select_slider(
            "Layer-wise learning rate decay",
            options=["off", 0.9, 0.8, 0.75, 0.65, 0.5],
            value="off",
            key="train_layer_decay",
            persist_state="session",
            help="Blocks further from the head learn more slowly (0.75: each block 0.75x the next).",
        )
        class_balanced = a2.toggle(
            "Class-balanced loss",
            False,
            key="train_balanced",
            persist_state="session",
            help="Every class counts equally, however many pictures it has.",
        )
        feature_cache = a3.toggle(
            "Feature cache",
            True,
            key="train_feature_cache",
            persist_state="session",
            help="When the whole backbone is frozen and augmentation is off, compute its features once and reuse them.",
        )
        devices = ["auto", "cpu"] + (["cuda"] if ui.device_type() == "cuda" else [])
        device = a1.selectbox("Device", devices, key="train_device", persist_state="session")

    def make_config(**overrides) -> TrainConfig:
        val_split, test_split, seed = ui.split_settings()
        freeze = "all" if depth == total else "none" if depth == 0 else str(depth)
        values = dict(
            data_dir=dataset["path"],
            backbone=backbone,
            weights=weights,
            freeze=freeze,
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=None if lr == "auto" else float(lr),
            img_size=None if img_size == default_size else int(img_size),
            val_split=val_split,
            test_split=test_split,
            seed=seed,
            device=device,
            runs_dir=str(ui.settings.runs_dir()),
            augment=augment,
            label_smoothing=float(label_smoothing),
            class_balanced=bool(class_balanced),
            weight_decay=float(weight_decay),
            warmup_epochs=float(warmup),
            early_stopping=int(early),
            layer_decay=None if layer_decay == "off" else float(layer_decay),
            feature_cache=bool(feature_cache),
        )
        values.update(overrides)
        return TrainConfig(**values)

    def start(config: TrainConfig) -> None:
        with ui.user_errors("Training could not start"):
            job = ui.job_manager().submit(config)
            st.session_state[ui.JOB] = job.id
            st.rerun()

    b1, b2 = st.columns(2)
    ready = dataset is not None and manifest is not None
    if b1.button("Start training", type="primary", key="train_start", disabled=not ready, width="stretch"):
        start(make_config())
    quick_weights = "offline" if offline_weights_file(QUICK_BACKBONE) else "auto"
    if b2.button(
        "Quick model",
        key="train_quick",
        disabled=not ready,
        icon=":material/bolt:",
        width="stretch",
        help=f"One click: {label_for(QUICK_BACKBONE)} ({quick_weights} weights), backbone frozen, no augmentation. "
        "Its features are computed once and cached, so only the head trains: fast even on a CPU.",
    ):
        start(
            make_config(
                backbone=QUICK_BACKBONE,
                weights=quick_weights,
                freeze="all",
                augment="off",
                img_size=int(img_size),
                feature_cache=True,
            )
        )
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


STAGES = {
    "scan": "Checking the pictures",
    "decode": "Decoding the pictures once (kept for the next runs)",
    "features": "Computing the backbone's features once (kept for the next runs)",
}


def show_progress(snap) -> None:
    cfg = snap.config
    what = f"{label_for(cfg['backbone'])}, {cfg['epochs']} epochs, freeze {cfg['freeze']}"
    st.markdown(f"**{snap.id}** · {what} · on {snap.device} · **{snap.state}**")
    if snap.state == "queued":
        st.info(
            f"Waiting: {snap.queue_position} job(s) ahead of this one on {snap.device}. It starts by itself; you can "
            "leave this page.",
            icon=":material/hourglass_top:",
        )
    elif snap.state == "running" and snap.stage != "train":
        label = STAGES.get(snap.stage, "Preparing")
        done, tot = snap.stage_done, snap.stage_total
        st.progress(done / tot if tot else 0.0, text=f"{label}: {done}/{tot}" if tot else f"{label}...")
    elif snap.active or snap.history:
        st.progress(snap.fraction_done, text=progress_text(snap))
    if snap.active and st.button("Stop", key="train_stop", icon=":material/stop_circle:"):
        ui.job_manager().get(snap.id).stop()
        st.toast("Stopping at the next step; the best weights so far are kept.")


def show_curves(snap) -> None:
    used_cache = (snap.summary or {}).get("feature_cache", snap.start_info.get("feature_cache"))
    if used_cache:
        st.info(
            "Fast path: the backbone is frozen and augmentation is off, so its features are computed once and "
            "cached on disk; only the new head trains.",
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
    m3.metric("Epochs done", f"{len(history)} of {snap.epochs}")
    speed = snap.images_per_second
    m4.metric(
        "Speed (images/s)", f"{speed:,.0f}" if speed >= 100 else f"{speed:.1f}", help="Training pictures per second."
    )

    spe = snap.total_steps / snap.epochs if snap.total_steps and snap.epochs else 1.0
    k1, k2, k3 = st.columns(3)
    k1.plotly_chart(loss_figure(snap.step_losses, history, spe, snap.total_steps), key="train_loss_chart")
    k2.plotly_chart(accuracy_figure(history, snap.epochs), key="train_accuracy_chart")
    k3.plotly_chart(lr_figure(snap.lr_schedule, round(len(history) * spe)), key="train_lr_chart")
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
        st.error(f"Training failed: {snap.error}")
    if snap.state in ("finished", "stopped") and snap.run_dir:
        if snap.id == st.session_state.get(ui.JOB):
            st.session_state[ui.RUN] = snap.run_dir
        summary = snap.summary or {}
        st.caption(
            f"Final validation accuracy: {ui.pct(summary.get('val_accuracy'))} · best {ui.pct(summary.get('best_val_accuracy'))}"
            f" at epoch {summary.get('best_epoch')} · trained in {ui.duration(summary.get('train_seconds'))}"
            + (
                f" · test accuracy {ui.pct(summary['test_accuracy'])}"
                if summary.get("test_accuracy") is not None
                else ""
            )
        )
        ui.next_step("see where the model is right and wrong.", "evaluate", "Go to 4. Evaluate")


def show_other_jobs(job_id: str) -> None:
    others = [j.snapshot() for j in ui.job_manager().jobs() if j.id != job_id]
    if not others:
        return
    with st.expander(f"Other jobs on this server ({len(others)})"):
        st.dataframe(
            [
                {
                    "job": o.id,
                    "state": o.state,
                    "backbone": label_for(o.config["backbone"]),
                    "queue position": o.queue_position if o.state == "queued" else None,
                    "best validation accuracy": max((h["val_accuracy"] for h in o.history), default=None),
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


with live_col:
    if not live_first:
        st.divider()
    st.subheader("Progress")
    live_progress()
    live_curves()
    if job is not None and not is_active:
        show_outcome(job.snapshot())
    if live_first:
        st.divider()
        st.subheader("Next training")

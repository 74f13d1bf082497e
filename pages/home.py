"""Home: what Headstart does, the device it found, the job running now, the last runs."""

import streamlit as st

from pages import _common as ui

ui.header("Headstart", "Teach a pretrained image model your own classes, from a folder of pictures, without code.")

st.markdown(
    "1. **Data**: give a folder with one sub-folder of pictures per class (or try the sample digits).\n"
    "2. **Model** and **Train**: pick a pretrained network and fine-tune it; watch it learn, live.\n"
    "3. **Evaluate**, **Predict**, **Export**: see how good it is, try new pictures, take the model away."
)

left, right = st.columns(2)
with left:
    st.subheader("This computer")
    device = ui.device_description()
    st.metric("Trains on", device, help="A GPU trains many times faster than a CPU; small backbones suit a CPU.")
    if ui.device_type() == "cpu":
        st.caption("No GPU found: Headstart picks small backbones and can train only the new head (Quick model).")
    dataset = ui.current_dataset()
    st.metric("Data set", dataset["origin"] if dataset else "none yet")
    with st.form("home_workspace_form", border=False):
        typed = st.text_input(
            "Workspace",
            value=st.session_state.get(ui.WORKSPACE, ""),
            key="home_workspace",
            placeholder="shared (no name)",
            help="On a shared computer (a class, a lab), type your name or your group's: your runs are kept in "
            "a folder of their own and only that workspace's runs and jobs show here. Anyone typing the same "
            "name shares it: it keeps work apart, it is not a password.",
        )
        if st.form_submit_button("Use this workspace"):
            st.session_state[ui.WORKSPACE] = typed.strip()
            st.session_state.pop(ui.RUN, None)  # a run of the workspace left behind is not this one's
            st.rerun()
with right:
    st.subheader("Training now")
    job = ui.job_to_show()
    snap = job.snapshot() if job is not None else None
    if snap is not None and snap.active:
        from tl_core.backbones import label_for

        what = f"{label_for(snap.config['backbone'])} on {snap.data_label or 'a data set'}, epoch {snap.epoch}/{snap.epochs}"
        if snap.state == "queued":
            what = f"waiting in the queue ({snap.queue_position} ahead): {label_for(snap.config['backbone'])}"
        st.metric("Job", snap.state, help=snap.id)
        st.progress(snap.fraction_done, text=what)
        st.page_link(ui.PAGES["train"].path, label="Follow it on the Train page", icon=":material/monitoring:")
    else:
        st.write("No training is running on this server.")
        st.page_link(
            ui.PAGES["data" if dataset is None else "train"].path,
            label="Start with your data" if dataset is None else "Go to Train",
            icon=":material/arrow_forward:",
        )

st.subheader("Recent runs")
with ui.user_errors("The list of runs could not be read"):
    runs = ui.list_runs()
    if not runs:
        st.write("No run yet. A run is one training: its settings, curves and model are kept in its own folder.")
    else:
        st.dataframe(
            [
                {
                    "run": r.title,
                    "status": r.status,
                    "validation accuracy": None
                    if r.summary.get("best_val_accuracy") is None
                    else 100 * r.summary["best_val_accuracy"],
                    "epochs": r.summary.get("epochs_run"),
                    "classes": len(r.class_names),
                    "training time": ui.duration(r.summary.get("train_seconds")),
                    "folder": r.id,
                }
                for r in runs[:10]
            ],
            hide_index=True,
            column_config={
                "validation accuracy": st.column_config.ProgressColumn(
                    "validation accuracy",
                    help="Best share of held-out pictures labelled right",
                    format="%.1f%%",  # as every other page writes a share (tl_core.formatting)
                    min_value=0.0,
                    max_value=100.0,
                ),
            },
            key="home_runs",
        )
        st.caption(f"Runs are kept in {ui.runs_dir().resolve()}.")

        resuming = {j.config.resume for j in ui.job_manager().active_jobs()}
        cut_off = [r for r in runs if r.can_resume and str(r.run_dir) not in resuming]
        if cut_off:
            st.subheader("Cut off before they ended")
            st.caption(
                "These runs stopped early (the server was closed or killed, or the disk filled). Each kept its last "
                "finished epoch: resume it and it goes on from there, in the same folder, with the same pictures."
            )
            for run in cut_off[:5]:
                text, button = st.columns([4, 1])
                text.write(f"{ui.run_label(run)}, after {run.summary.get('epochs_run', 0)} epoch(s)")
                if button.button("Resume", key=f"home_resume_{run.id}", icon=":material/play_arrow:"):
                    from tl_core.config import TrainConfig

                    with ui.user_errors("The run could not resume"):
                        job = ui.job_manager().submit(TrainConfig.for_resume(run.run_dir), data_label=run.id)
                        st.session_state[ui.JOB] = job.id
                        st.rerun()  # "Training now", above, follows it

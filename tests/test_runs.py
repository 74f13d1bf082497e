"""A run folder outlives the process that wrote it: a killed run shows as interrupted with its best weights kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_image
from tl_core.predict import Predictor
from tl_core.runs import list_runs, load_run, read_metrics

REPO = Path(__file__).resolve().parents[1]


def test_run_folder_survives_a_killed_process(tmp_path):
    for name, color in [("a", (200, 40, 40)), ("b", (40, 40, 200))]:
        for i in range(10):
            write_image(tmp_path / "data" / name / f"{i}.png", color=color)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tl_core",
            "train",
            str(tmp_path / "data"),
            "--backbone",
            "test_efficientnet",
            "--weights",
            "none",
            "--freeze",
            "none",
            "--epochs",
            "10000",
            "--early-stopping",
            "0",
            "--img-size",
            "32",
            "--runs-dir",
            str(runs),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 120
        run_dir = None
        while time.monotonic() < deadline:
            found = list(runs.glob("*/metrics.jsonl"))
            if found and sum(e["event"] == "epoch" for e in read_metrics(found[0].parent)) >= 2:
                run_dir = found[0].parent
                break
            time.sleep(0.1)
        assert run_dir is not None, "the run never reached its second epoch"
        assert load_run(run_dir).status == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    (run,) = list_runs(runs)
    assert run.status == "interrupted"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] >= 2
    assert summary["best_val_accuracy"] is not None
    predictor = Predictor.from_run(run_dir)  # the best weights up to the kill are usable
    assert predictor.class_names == ["a", "b"]


def test_a_runs_curves_open_in_tensorboard(finished_run, tmp_path):
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tl_core.runs import read_metrics
    from tl_core.tensorboard import write_events

    run = tmp_path / finished_run.name
    shutil.copytree(finished_run, run)
    events = EventAccumulator(str(run / "tensorboard")).Reload()  # written when the run ended
    epochs = [e for e in read_metrics(run) if e.get("event") == "epoch"]
    assert [s.value for s in events.Scalars("accuracy/val")] == pytest.approx([e["val_accuracy"] for e in epochs])
    assert [s.step for s in events.Scalars("loss/train")] == [e["epoch"] for e in epochs]
    shutil.rmtree(run / "tensorboard")
    write_events(run)  # and for a run from before, on demand
    again = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [s.value for s in again.Scalars("loss/val")] == pytest.approx([e["val_loss"] for e in epochs])


def test_a_run_is_named_by_its_data_set_as_its_person_knows_it(tmp_path):
    from tl_core.runs import data_name

    uploaded = tmp_path / "uploads" / "be65598021f3ed0a"
    (uploaded / "solar cells" / "defective").mkdir(parents=True)
    assert data_name(uploaded) == "solar cells"  # not the id it is kept under
    assert data_name(tmp_path / "leaves.zip") == "leaves"
    assert data_name(tmp_path / "x-rays") == "x-rays"

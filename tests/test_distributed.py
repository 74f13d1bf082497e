"""Several processes training together (DDP under torchrun, gloo on this CPU): the same steps as one process, one
run folder, a stop that reaches every process, a killed process that fails the run with a sentence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import wait_until
from tl_core import distributed, events
from tl_core.devices import device_choices
from tl_core.runs import list_runs, read_json, read_metrics
from tl_core.training import StepSampler, TrainConfig, planned_lrs, train

ROOT = Path(__file__).resolve().parent.parent


def _long_tiny_run(data: Path, tmp_path: Path) -> TrainConfig:
    """A run long enough to be caught in the middle (hundreds of steps of a tiny model), on two processes."""
    return TrainConfig(
        str(data),
        backbone="test_efficientnet",
        weights="none",
        freeze="none",
        epochs=200,
        batch_size=4,
        img_size=32,
        runs_dir=str(tmp_path / "runs"),
        early_stopping=0,
        processes=2,
    )


def test_two_processes_take_the_steps_of_one_and_reach_its_accuracy(digits_dir, tmp_path):
    """Real pretrained weights, real digits, the last blocks fine-tuning from the fitted head: over 2 processes of 8
    pictures a step, the run is the run of one process with 16. Without augmentation (whose random draws differ by
    process) and with BatchNorm statistics kept (as fine-tuning from the fitted head does), only the order of
    floating-point sums differs, so the losses agree to 2e-3 (measured: 2e-4; without DDP, each process
    learning on its own half, the training loss differs by 2e-2) and the accuracy to one picture."""
    settings = dict(weights="offline", freeze="5", augment="off", epochs=3, batch_size=16, img_size=64)
    settings.update(early_stopping=0, tta="off")
    one = train(TrainConfig(str(digits_dir), runs_dir=str(tmp_path / "one"), **settings))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    command = [sys.executable, "-m", "tl_core", "train", str(digits_dir), *flags, "--processes", "2", "--json"]
    done = subprocess.run(
        [*command, "--runs-dir", str(tmp_path / "two")], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(done.stdout.strip().splitlines()[-1])

    assert (one["processes"], two["processes"]) == (1, 2)
    assert [r.status for r in list_runs(tmp_path / "two")] == ["finished"]  # one run folder, written by rank 0
    assert abs(two["best_val_accuracy"] - one["best_val_accuracy"]) <= 1 / one["num_val"]
    assert one["best_val_accuracy"] >= 0.8  # the pretrained model learnt the digits, so the comparison means something
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=2e-3)
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=2e-3)
    steps = [e for e in read_metrics(two["run_dir"]) if e["event"] == "step"]
    assert len(steps) == len([e for e in read_metrics(one["run_dir"]) if e["event"] == "step"]) == 30
    assert two["batch_size"] == 16  # the global batch: 8 pictures in each process
    assert read_json(Path(two["run_dir"]) / "config.json")["processes"] == 2


def test_a_stop_reaches_every_process(manager, tiny_data, tmp_path):
    job = manager.submit(_long_tiny_run(tiny_data, tmp_path))
    assert wait_until(lambda: job.snapshot().step >= 3, timeout=120), job.snapshot()
    launcher = job.launcher
    job.stop()
    assert job.wait(timeout=60), "the processes did not all stop"
    snap = job.snapshot()
    assert snap.state == "stopped", snap.error
    assert launcher.returncode == 0  # torchrun ended because every process ended, none was killed
    assert 3 <= snap.step < 1200  # it trained, and it stopped long before the end
    assert read_json(Path(snap.run_dir) / "summary.json")["status"] == "stopped"
    assert snap.start_info["num_train"] == 20  # the live view followed rank 0's events


def _process_of_rank(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of torchrun's worker of that rank (Linux: from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher.pid and f"RANK={rank}".encode() in environment:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under torchrun {launcher.pid}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_a_killed_process_fails_the_run_with_a_sentence(manager, tiny_data, tmp_path):
    job = manager.submit(_long_tiny_run(tiny_data, tmp_path))
    assert wait_until(lambda: job.snapshot().step >= 3, timeout=120), job.snapshot()
    os.kill(_process_of_rank(job.launcher, 1), signal.SIGKILL)
    assert job.wait(timeout=90), "the run hung after one of its processes died"
    snap = job.snapshot()
    assert snap.state == "failed"
    assert snap.error.startswith("Training process 2 of 2 ended unexpectedly (it was ended by SIGKILL)")
    summary = read_json(Path(snap.run_dir) / "summary.json")
    assert summary["status"] == "failed" and "Training process 2 of 2" in summary["message"]
    assert [r.status for r in list_runs(tmp_path / "runs")] == ["failed"]


def test_auto_and_resuming_train_in_one_process(tmp_path):
    with pytest.raises(ValueError, match="one process"):
        TrainConfig(str(tmp_path), strategy="auto", budget="1m", processes=2)
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(str(tmp_path), processes=0)
    with pytest.raises(ValueError, match="shared out between the 8 processes"):
        TrainConfig(str(tmp_path), batch_size=4, processes=8)


def test_one_process_is_a_world_of_one():
    world = distributed.World()
    assert world.main and not world.active
    assert world.agree(True) and not world.agree(False)
    assert world.sum(1.5, 2) == [1.5, 2]
    rows = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(world.gather_rows(rows[world.share(5)], 5), rows)
    assert world.from_main(lambda: 42, RuntimeError) == 42
    assert distributed.World(rank=1, local_rank=1, size=2).share(5) == slice(1, 5, 2)


def test_the_learning_rate_plan_counts_the_steps_of_several_processes():
    # 100 pictures, global batch 16: one process takes 7 steps an epoch (the last of 4); two take 7 of 8 each
    assert len(planned_lrs(100, 16, 3, 1e-3, 100, processes=1)) == len(planned_lrs(100, 16, 3, 1e-3, 100, 2)) == 21


def test_a_failure_is_told_from_torchruns_report():
    report = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-01_15:00:00
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
"""
    sentence = distributed.failure_sentence(report, 2)
    assert sentence.startswith("Training process 2 of 2 ended unexpectedly (it was ended by SIGKILL)")
    # rank 0 also said that the other process was gone: the process killed first is the news
    lost = distributed.lost_peer_message(RuntimeError("gloo: Connection closed by peer"), distributed.World(size=2))
    assert distributed.failure_sentence(f"headstart: {lost}\n" + report, 2) == sentence
    said = f"Traceback ...\nheadstart: The folder '/data/x' does not exist. Choose another.\nheadstart: {lost}\n"
    stopped = report.replace("rank      : 1 (local_rank: 1)", "rank      : 0 (local_rank: 0)").replace("-9 (", "1 (")
    assert distributed.failure_sentence(said + stopped, 2) == "The folder '/data/x' does not exist. Choose another."


def test_events_read_back_from_their_records():
    step = events.Step(1, 2, 2, 5, 10, 0.5, 1e-3, 12.0, 3.0)
    assert events.from_record(json.loads(json.dumps(step.record()))) == step
    ended = events.from_record({"event": "end", "time": 1.0, "status": "finished", "run_dir": "x"})
    assert ended == events.Ended({"status": "finished", "run_dir": "x"})
    assert events.from_record({"run_dir": "x", "status": "finished"}) is None  # the --json summary line


def test_the_train_page_offers_each_count_of_gpus_then_the_cpu():
    three = device_choices(["NVIDIA H100 80GB HBM3"] * 3, apple_gpu=False)
    assert [(c.device, c.processes) for c in three] == [("cuda", 1), ("cuda", 2), ("cuda", 3), ("cpu", 1)]
    assert [c.label for c in three[:3]] == [
        "GPU: NVIDIA H100 80GB HBM3",
        "2 GPUs together (NVIDIA H100 80GB HBM3)",
        "All 3 GPUs together (NVIDIA H100 80GB HBM3)",
    ]
    assert [(c.device, c.processes) for c in device_choices([], apple_gpu=True)] == [("mps", 1), ("cpu", 1)]
    assert ("cpu", 2) not in [(c.device, c.processes) for c in three]  # with GPUs, the CPU trains in one
    cpu_only = [(c.device, c.processes) for c in device_choices([], apple_gpu=False)]
    assert cpu_only == ([("cpu", 1), ("cpu", 2)] if (os.cpu_count() or 1) >= 2 else [("cpu", 1)])


def test_a_run_of_several_processes_resumes_in_one(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(str(tmp_path), processes=2).to_dict()))
    assert TrainConfig.for_resume(tmp_path).processes == 1


@pytest.mark.parametrize("num_items, batch_size", [(100, 16), (34, 16), (102, 100), (23, 7)])
def test_the_processes_shares_of_a_step_make_one_processs_batch(num_items, batch_size):
    alone = StepSampler(num_items, batch_size, distributed.World(), seed=3)
    three = [StepSampler(num_items, batch_size, distributed.World(rank=r, size=3), seed=3) for r in range(3)]
    for sampler in (alone, *three):
        sampler.set_epoch(2)
    batches, shares = list(alone), [list(s) for s in three]
    assert len({len(s) for s in shares}) == 1  # the same number of steps in each, so no process waits for another
    # one process's steps, except a last batch smaller than the processes (34, 16: 2 pictures) joins the one before
    assert len(shares[0]) == len(batches) - (len(batches[-1][1]) < 3 and len(batches) > 1)
    assert np.array_equal(np.concatenate([w for _, w in shares[0]]), np.concatenate([w for _, w in batches]))
    assert all(np.array_equal(mine, whole) for mine, whole in batches)  # alone, its share is the whole batch
    for step in range(len(shares[0])):
        whole = shares[0][step][1]
        parts = [shares[r][step][0] for r in range(3)]
        assert all(len(p) >= 1 for p in parts)  # nobody's share is empty
        assert sorted(np.concatenate(parts).tolist()) == sorted(whole.tolist())  # together: the whole batch
        assert all(np.array_equal(shares[r][step][1], whole) for r in range(3))
    assert sorted(np.concatenate([w for _, w in batches]).tolist()) == list(range(num_items))  # each picture once
    alone.set_epoch(3)
    assert not np.array_equal(np.concatenate([w for _, w in alone]), np.concatenate([w for _, w in batches]))

"""Faults: a run killed outright, a disk that fills during a run, a runs folder that cannot be written.

Each checks what the person sees (a sentence) and that nothing else is lost: not earlier runs, not the pictures.
The disk cases mount small tmpfs folders, which needs root (as in CI's container); elsewhere they are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_training import _config, colours  # noqa: F401 - the fixture
from tl_core.config import TrainConfig
from tl_core.errors import user_message
from tl_core.runs import list_runs, load_run, read_metrics
from tl_core.training import train

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--freeze", "none", "--img-size", "32"]
TINY += ["--batch-size", "8", "--lr", "0.003", "--early-stopping", "0", "--no-probe", "--tta", "off"]


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tl_core", *args], capture_output=True, text=True, timeout=300, **kwargs
    )


def _epochs(run_dir: Path) -> list[dict]:
    return [e for e in read_metrics(run_dir) if e.get("event") == "epoch"]


def test_a_killed_run_resumes_from_its_last_epoch_as_if_it_never_was(colours, tmp_path):  # noqa: F811
    epochs = 12
    reference = train(
        _config(colours, tmp_path / "ref", epochs=epochs, early_stopping=0, probe=False, tta="off", lr=0.003)
    )
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "tl_core", "train", str(colours), *TINY, "--epochs", str(epochs)]
    proc = subprocess.Popen([*cmd, "--runs-dir", str(runs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted(runs.glob("*/metrics.jsonl"))
        if found and len(_epochs(found[0].parent)) >= 2:
            run_dir = found[0].parent
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_dir is not None, "the run ended (or never got to epoch 2) before it could be killed"

    killed = load_run(run_dir)
    assert killed.status == "interrupted" and "killed or crashed" in killed.summary["message"]
    done_before = killed.summary["epochs_run"]
    assert 2 <= done_before < epochs and (run_dir / "model.safetensors").exists()
    assert (run_dir / "checkpoint.pt").exists()

    resumed = _cli("resume", str(run_dir), "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["run_dir"] == str(run_dir)
    assert [e["epoch"] for e in _epochs(run_dir)] == list(range(1, epochs + 1))  # each epoch once, in order
    assert "Resumed after epoch" in " ".join(e.get("text", "") for e in read_metrics(run_dir))
    assert not (run_dir / "checkpoint.pt").exists()  # ended normally: nothing left to resume
    # the same shuffles, steps and weights as the run that was never killed
    for ours, theirs in zip(_epochs(run_dir), _epochs(Path(reference["run_dir"])), strict=True):
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], abs=1e-5)
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
    assert summary["best_val_accuracy"] == reference["best_val_accuracy"]
    # a finished run is not resumed again, with a sentence
    again = _cli("resume", str(run_dir))
    assert again.returncode == 1 and "finished normally: there is nothing to resume" in again.stderr


def test_a_run_does_not_resume_on_pictures_that_changed(colours, tmp_path):  # noqa: F811
    summary = train(_config(colours, tmp_path, epochs=2))
    run_dir = Path(summary["run_dir"])
    (run_dir / "summary.json").unlink()  # as if it had been cut off
    (colours / "red" / "red0.png").unlink()
    with pytest.raises(Exception, match="changed since run .* started") as raised:
        train(TrainConfig.for_resume(run_dir))
    assert "Start a new run" in user_message(raised.value)


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small folder here ({done.stderr.decode().strip() or 'not root'})")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=6m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_a_disk_that_fills_during_a_run_fails_that_run_alone_with_a_sentence(colours, small_disk, monkeypatch):  # noqa: F811
    # the free space Headstart keeps (1 GB) would refuse to start on this 6 MB disk: this is the case it misses, a
    # disk filled by something else while a run goes
    monkeypatch.setenv("HEADSTART_MIN_FREE_GB", "0.000001")
    data, runs = small_disk / "data", small_disk / "runs"
    subprocess.run(["cp", "-r", str(colours), str(data)], check=True)
    earlier = train(_config(data, small_disk, epochs=2, runs_dir=str(runs)))
    before_data, before_run = _digest(data), _digest(Path(earlier["run_dir"]))
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    weights = (Path(earlier["run_dir"]) / "model.safetensors").stat().st_size
    # room for the weights and the first checkpoint (about 3x: Adam's moments), not for a second one beside it
    (small_disk / "filler").write_bytes(b"\0" * (free - int(6.5 * weights)))

    with pytest.raises(OSError) as raised:
        train(_config(data, small_disk, epochs=5, early_stopping=0, runs_dir=str(runs)))
    sentence = user_message(raised.value)
    assert sentence.startswith("The disk is full") and "resume it from Home" in sentence
    assert _digest(data) == before_data  # every picture as it was
    assert _digest(Path(earlier["run_dir"])) == before_run  # the earlier run, byte for byte
    statuses = {r.run_dir: r.status for r in list_runs(runs)}  # listing a folder on a full disk does not crash
    assert statuses[Path(earlier["run_dir"])] == "finished"
    failed = next(r for r in list_runs(runs) if r.run_dir != Path(earlier["run_dir"]))
    assert failed.status in ("failed", "interrupted") and failed.summary["epochs_run"] >= 1  # it got that far
    assert failed.has_model and not list(runs.glob("*/*.tmp"))  # its best weights kept, half-written files gone
    # space freed: the run resumes where it was cut off and ends normally
    (small_disk / "filler").unlink()
    resumed = train(TrainConfig.for_resume(failed.run_dir))
    assert resumed["status"] == "finished" and resumed["epochs_run"] == 5
    assert [e["epoch"] for e in _epochs(failed.run_dir)] == [1, 2, 3, 4, 5]


def test_a_read_only_runs_folder_is_a_sentence_at_start(colours, tmp_path):  # noqa: F811
    runs = tmp_path / "readonly"
    _mount_tmpfs(runs, "size=2g,ro")  # room to spare: the refusal must be for being read-only
    try:
        with pytest.raises(OSError) as raised:
            train(_config(colours, tmp_path, runs_dir=str(runs)))
        sentence = user_message(raised.value)
        assert sentence.startswith("Headstart may not write in") and "HEADSTART_RUNS_DIR" in sentence
        done = _cli("train", str(colours), *TINY, "--epochs", "1", "--runs-dir", str(runs))
        assert done.returncode == 1 and "may not write in" in done.stderr and "Traceback" not in done.stderr
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)


def test_a_run_cut_off_while_wrapping_up_resumes_to_its_end_or_says_why_not(colours, tmp_path):  # noqa: F811
    from tl_core.events import EpochEnd

    def cut_after_last_epoch(event) -> None:
        if isinstance(event, EpochEnd) and event.epoch == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        train(_config(colours, tmp_path, epochs=3, tta="off"), on_event=cut_after_last_epoch)
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert load_run(run_dir).can_resume  # the checkpoint outlives everything but a normal end
    resumed = train(TrainConfig.for_resume(run_dir))
    assert resumed["status"] == "finished" and resumed["epochs_run"] == 3
    assert [e["epoch"] for e in _epochs(run_dir)] == [1, 2, 3]
    # a run whose checkpoint is gone but whose epochs are logged is not trained again from zero over its weights
    (run_dir / "summary.json").unlink()
    weights = (run_dir / "model.safetensors").read_bytes()
    with pytest.raises(Exception, match="no checkpoint to go on from"):
        train(TrainConfig.for_resume(run_dir))
    assert (run_dir / "model.safetensors").read_bytes() == weights

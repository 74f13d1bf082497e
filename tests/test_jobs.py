"""Background jobs: snapshots while running, a queue per device, stop within one step, cancel while queued."""

from __future__ import annotations

import time

from tests.conftest import wait_until
from tl_core.training import TrainConfig


def _config(data, tmp_path, epochs):
    return TrainConfig(
        str(data),
        backbone="test_efficientnet",
        weights="none",
        freeze="none",
        epochs=epochs,
        batch_size=4,
        img_size=32,
        runs_dir=str(tmp_path / "runs"),
        early_stopping=0,
    )


def test_second_job_queues_then_runs_and_stop_is_prompt(manager, tiny_data, tmp_path):
    first = manager.submit(_config(tiny_data, tmp_path, epochs=500))
    second = manager.submit(_config(tiny_data, tmp_path, epochs=1))
    assert wait_until(lambda: len(first.snapshot().history) >= 1)  # an epoch done: there are weights to keep

    waiting = second.snapshot()
    assert waiting.state == "queued" and waiting.queue_position == 1
    running = first.snapshot()
    assert running.state == "running" and running.stage == "train" and running.step_losses

    first.stop()
    stopping = first.snapshot()
    steps_at_stop = stopping.step
    assert stopping.stopping and stopping.state == "running"  # the page says "stopping..." until it has
    assert first.wait(30)
    final = first.snapshot()
    assert final.state == "stopped" and not final.stopping
    assert f"The kept model is epoch {final.summary['best_epoch']}'s" in final.summary["message"]
    assert final.step <= steps_at_stop + 1  # the step under way may finish; no other starts
    assert final.summary["status"] == "stopped"

    assert second.wait(60)
    done = second.snapshot()
    assert done.state == "finished" and len(done.history) == 1 and done.summary["epochs_run"] == 1
    assert done.fraction_done == 1.0


def test_a_queued_job_can_be_cancelled(manager, tiny_data, tmp_path):
    first = manager.submit(_config(tiny_data, tmp_path, epochs=500))
    second = manager.submit(_config(tiny_data, tmp_path, epochs=1))
    second.stop()
    assert second.snapshot().state == "cancelled"
    first.stop()
    assert first.wait(30)
    time.sleep(0.2)
    assert second.snapshot().state == "cancelled" and second.snapshot().run_dir is None


def test_a_failing_job_reports_a_sentence_and_the_worker_lives_on(manager, tiny_data, tmp_path):
    bad = manager.submit(_config(tmp_path / "missing", tmp_path, epochs=1))
    assert bad.wait(30)
    assert bad.snapshot().state == "failed" and "no folder or zip" in bad.snapshot().error
    good = manager.submit(_config(tiny_data, tmp_path, epochs=1))
    assert good.wait(60) and good.snapshot().state == "finished"


def test_the_same_config_twice_is_one_job(manager, tiny_data, tmp_path):
    config = _config(tiny_data, tmp_path, epochs=500)
    first = manager.submit(config, data_label="folder 'tiny'")
    again = manager.submit(_config(tiny_data, tmp_path, epochs=500))  # an equal config: a double click
    assert again is first and manager.find_active(config) is first and len(manager.jobs()) == 1
    assert first.snapshot().data_label == "folder 'tiny'"
    other = manager.submit(_config(tiny_data, tmp_path, epochs=3))
    assert other is not first and len(manager.jobs()) == 2
    first.stop()
    assert manager.find_active(config) is None  # once stopping, the same settings may start afresh
    assert first.wait(30) and other.wait(60)

"""Auto: the fitted head first, fine-tuning only as far as the time budget allows, and the better model kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_training import _config, colours  # noqa: F401 - the fixture
from tl_core.auto import parse_budget, plan_fine_tune, train_auto
from tl_core.config import TrainConfig


def test_budgets_read_as_a_person_writes_them():
    assert parse_budget("90s") == 90 and parse_budget("10m") == 600 and parse_budget("1.5h") == 5400
    assert parse_budget("600") == 600 and parse_budget("best") is None and parse_budget(None) is None
    with pytest.raises(ValueError, match="like 90s, 10m or 1h"):
        parse_budget("ten minutes")
    with pytest.raises(ValueError, match="like 90s"):
        TrainConfig("data", strategy="auto", budget="soon")


def test_the_plan_follows_the_budget_the_speed_and_the_data():
    common = dict(num_val=100, num_classes=2, total_blocks=9, probe_accuracy=0.8)
    # 1,000 pictures per class, 50 img/s training: every block adapts; 2000/50 + 100/200 = 40.5 s an epoch
    plan = plan_fine_tune(
        2000, **common, seconds_left=600, training_images_per_second=50, inference_images_per_second=200
    )
    assert plan.freeze == "none" and plan.epochs == int(600 * 0.85 // 40.5) == 12
    # 30 pictures per class: only the last third of the blocks, which is cheaper
    plan = plan_fine_tune(
        60, **common, seconds_left=600, training_images_per_second=50, inference_images_per_second=200
    )
    assert plan.freeze == "6" and plan.epochs == 30  # capped
    # a minute and slow training: no room for 3 epochs even of the top third: keep the fitted head
    assert plan_fine_tune(2000, **common, seconds_left=60, training_images_per_second=20,
                          inference_images_per_second=50) is None  # fmt: skip
    # no limit: as long as it improves, up to 30 epochs
    plan = plan_fine_tune(
        2000, **common, seconds_left=None, training_images_per_second=1, inference_images_per_second=1
    )
    assert plan.epochs == 30
    assert plan_fine_tune(2000, **{**common, "probe_accuracy": 1.0}, seconds_left=None, training_images_per_second=50,
                          inference_images_per_second=50) is None  # fmt: skip


def _runs(tmp_path) -> list[Path]:
    return sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())


def test_a_tiny_budget_keeps_the_fitted_head_and_says_so(colours, tmp_path):  # noqa: F811
    summary = train_auto(_config(colours, tmp_path, strategy="auto", budget="1s", freeze="none", epochs=50))
    assert len(_runs(tmp_path)) == 1  # no fine-tuning was started
    assert summary["frozen_blocks"] == summary["total_blocks"] and summary["probe"]["folds"] == 5
    assert summary["message"].startswith("Auto kept the fitted head")
    on_disk = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert on_disk["auto"]["budget"] == "1s" and on_disk["auto"]["sentence"] in on_disk["message"]


def test_no_limit_fine_tunes_from_the_head_and_keeps_the_better(digits_dir, tmp_path):
    # Real digits and a small random network: the fitted head is far from perfect, so fine-tuning is worth a try.
    config = _config(digits_dir, tmp_path, strategy="auto", budget="best", early_stopping=2, img_size=32)
    summary = train_auto(config)
    runs = summary["auto"]["runs"]
    assert len(runs) == 2 == len(_runs(tmp_path))
    assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in runs)
    assert "Auto tried the fitted head" in summary["message"]
    tuned = json.loads((Path(runs[1]["run_dir"]) / "config.json").read_text())
    assert tuned["freeze"] != "all" and tuned["epochs"] == 30  # no limit: up to 30 epochs, with early stopping
    assert tuned["probe"] is False  # random weights: fine-tuning starts from a zero head (with pretrained ones: LP-FT)

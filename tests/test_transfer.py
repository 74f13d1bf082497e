"""The point of Headstart: on the same small real data and the same budget, pretrained beats from-scratch."""

from __future__ import annotations

from tl_core.training import TrainConfig, train


def test_pretrained_beats_from_scratch_on_real_digits(digits_dir, tmp_path):
    budget = dict(epochs=8, batch_size=32, img_size=64, seed=0, early_stopping=0, runs_dir=str(tmp_path / "runs"))
    pretrained = train(TrainConfig(str(digits_dir), weights="offline", freeze="all", **budget))
    scratch = train(TrainConfig(str(digits_dir), weights="none", freeze="none", **budget))

    assert pretrained["num_val"] == scratch["num_val"] == 40  # the same split of the same images
    assert pretrained["best_val_accuracy"] >= 0.7
    assert scratch["best_val_accuracy"] <= 0.4
    assert pretrained["best_val_accuracy"] >= scratch["best_val_accuracy"] + 0.3
    assert pretrained["train_seconds"] < scratch["train_seconds"]  # and it needed less time

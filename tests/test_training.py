"""The training loop on tiny models and tiny images: run folder contract, bad files, caches, stop, early stopping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import write_image
from tl_core.events import FeatureCache, Progress, Schedule, Step
from tl_core.probe import PENALTIES
from tl_core.runs import read_metrics
from tl_core.training import TrainConfig, _class_weights, _lr_factor, train

SUMMARY_KEYS = {
    "run_dir",
    "backbone",
    "weights",
    "device",
    "num_classes",
    "class_names",
    "num_train",
    "num_val",
    "frozen_blocks",
    "total_blocks",
    "trainable_params",
    "total_params",
    "epochs_run",
    "val_accuracy",
    "best_val_accuracy",
    "val_loss",
    "train_seconds",
    "train_images_per_second",
    "status",
}


@pytest.fixture
def colours(tmp_path) -> Path:
    root = tmp_path / "colours"
    for name, color in [("red", (220, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 220))]:
        for i in range(10):
            write_image(root / name / f"{name}{i}.png", color=color)
    return root


def _config(data: Path, tmp_path: Path, **overrides) -> TrainConfig:
    options = dict(
        backbone="test_efficientnet",
        weights="none",
        freeze="none",
        epochs=3,
        batch_size=8,
        img_size=32,
        runs_dir=str(tmp_path / "runs"),
        lr=3e-3,
    )
    return TrainConfig(str(data), **{**options, **overrides})


def test_run_folder_contract_and_a_bad_file_does_not_stop_training(colours, tmp_path):
    (colours / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 50)
    (colours / "blue" / "notes.txt").write_text("shopping list")
    events = []
    summary = train(_config(colours, tmp_path), on_event=events.append)

    run = Path(summary["run_dir"])
    assert summary["status"] == "finished"
    assert set(summary) >= SUMMARY_KEYS
    assert summary["num_train"] + summary["num_val"] == 30  # every good image, none of the bad
    assert summary["class_names"] == ["blue", "green", "red"]
    assert summary["weights"] == "none" and summary["device"] == "cpu"
    for name in (
        "config.json",
        "labels.json",
        "split.json",
        "metrics.jsonl",
        "summary.json",
        "model.safetensors",
        "predictions.csv",
    ):
        assert (run / name).exists(), name
    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary))
    skipped = {p["path"]: p["reason"] for p in json.loads((run / "split.json").read_text())["skipped"]}
    assert set(skipped) == {"red/corrupt.jpg", "blue/notes.txt"}
    with open(run / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    columns = ["path", "true", "predicted", "confidence"] + [f"p({name})" for name in summary["class_names"]]
    assert len(rows) == summary["num_val"] and list(rows[0]) == columns
    for row in rows:  # every class's calibrated probability; the answer is the likeliest, its confidence that one's
        probs = [float(row[f"p({name})"]) for name in summary["class_names"]]
        assert sum(probs) == pytest.approx(1, abs=1e-5)
        assert row["predicted"] == summary["class_names"][probs.index(max(probs))]
        assert float(row["confidence"]) == pytest.approx(max(probs), abs=1e-6)
    kinds = [e["event"] for e in read_metrics(run)]
    assert kinds.count("epoch") == 3 and kinds[-1] == "end"
    assert kinds.count("step") == 3 * 3  # 24 training images in batches of 8
    steps = [e for e in events if isinstance(e, Step)]
    assert steps[-1].eta_seconds == 0 and steps[0].images_per_second > 0
    (schedule,) = [e.lrs for e in events if isinstance(e, Schedule)]
    assert schedule == pytest.approx([e.lr for e in steps])  # the plan drawn up front is what ran
    assert max(schedule) == pytest.approx(3e-3, rel=0.05) and schedule[-1] < schedule[len(schedule) // 2]


def test_frozen_backbone_uses_the_feature_cache_and_reuses_it(colours, tmp_path):
    first_events, second_events = [], []
    # The head trained by epochs here (probe off), so that the same training through the whole model can be compared.
    first = train(_config(colours, tmp_path, freeze="all", epochs=4, probe=False), on_event=first_events.append)
    second = train(_config(colours, tmp_path, freeze="all", epochs=4, probe=False), on_event=second_events.append)
    hits = [e.hit for e in first_events + second_events if isinstance(e, FeatureCache)]
    assert hits == [False, True]
    stages = lambda events: {e.stage for e in events if isinstance(e, Progress)}  # noqa: E731
    assert stages(first_events) == {"scan", "decode", "features"}
    assert stages(second_events) == {"scan"}  # a hit needs neither decoding nor the backbone
    assert first["feature_cache"] and second["feature_cache"]
    assert first["best_val_accuracy"] == second["best_val_accuracy"]
    no_cache = train(_config(colours, tmp_path, freeze="all", epochs=4, feature_cache=False, probe=False))
    assert not no_cache["feature_cache"]
    assert no_cache["best_val_accuracy"] == pytest.approx(first["best_val_accuracy"], abs=0.15)


def test_stop_request_ends_within_one_step_and_keeps_what_was_done(colours, tmp_path):
    steps = []

    def on_event(event):
        if isinstance(event, Step):
            steps.append(event.step)

    summary = train(_config(colours, tmp_path, epochs=50), on_event=on_event, should_stop=lambda: len(steps) >= 7)
    assert summary["status"] == "stopped"
    assert steps == list(range(1, 8))  # not one step more after the request
    assert summary["epochs_run"] == 2  # two whole epochs (3 steps each) were done before
    assert (Path(summary["run_dir"]) / "model.safetensors").exists()


def test_early_stopping_when_validation_loss_stalls(colours, tmp_path):
    summary = train(_config(colours, tmp_path, epochs=20, lr=0.0, early_stopping=2))
    assert summary["epochs_run"] == 3
    assert "Stopped early" in summary["message"]


def test_failure_is_recorded_in_the_run_folder(tmp_path):
    (tmp_path / "one" / "only").mkdir(parents=True)
    write_image(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(Exception, match="at least two"):
        train(_config(tmp_path / "one", tmp_path))
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "at least two" in summary["message"]


def test_schedule_and_class_weights():
    assert _lr_factor(0, 1000, 100) < 0.02
    assert _lr_factor(100, 1000, 100) == pytest.approx(1.0)
    assert _lr_factor(550, 1000, 100) == pytest.approx(0.505, abs=0.01)
    assert _lr_factor(1000, 1000, 100) == pytest.approx(0.01)
    weights = _class_weights(torch.tensor([0, 0, 0, 1]), 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])


def test_layer_decay_gives_earlier_blocks_smaller_learning_rates():
    import timm

    from tl_core.freezing import apply_freeze
    from tl_core.training import _param_groups

    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    plan = apply_freeze(model, "1")
    config = TrainConfig("unused", layer_decay=0.5, weight_decay=0.05)
    groups = _param_groups(model, plan, config, head_from_zero=True)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    by_name = dict(model.named_parameters())
    n = plan.total_blocks
    assert scale_of[id(by_name[plan.blocks[-1].param_names[0]])] == 0.5
    assert scale_of[id(by_name[plan.blocks[1].param_names[0]])] == 0.5 ** (n - 1)
    assert scale_of[id(by_name["fc.weight"])] == config.head_lr_scale == 3.0  # the new head takes bigger steps
    assert plan.blocks[0].param_names[0] not in {n for n, p in by_name.items() if id(p) in scale_of}  # frozen: absent
    no_decay = [g for g in groups if g["weight_decay"] == 0.0]
    assert all(p.ndim <= 1 for g in no_decay for p in g["params"])


def test_no_validation_images_is_a_clear_error(tmp_path):
    write_image(tmp_path / "data" / "a" / "1.png", color=(200, 0, 0))
    write_image(tmp_path / "data" / "b" / "1.png", color=(0, 0, 200))
    with pytest.raises(Exception, match="No picture is left for validation"):
        train(_config(tmp_path / "data", tmp_path))


def test_a_transformer_trains_and_predicts_at_another_image_size(colours, tmp_path):
    from tl_core.predict import Predictor

    summary = train(_config(colours, tmp_path, backbone="test_vit", img_size=48, epochs=4))
    assert summary["status"] == "finished" and summary["input"]["img_size"] == 48
    predictor = Predictor.from_run(summary["run_dir"])
    pictures = [next((colours / name).iterdir()) for name in ("red", "green", "blue")]
    assert [r["label"] for r in predictor.predict_paths(pictures)] == ["red", "green", "blue"]


def test_failed_run_summary_keeps_every_contract_field(tmp_path):
    with pytest.raises(Exception, match="no folder or zip"):
        train(_config(tmp_path / "missing", tmp_path))
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS and summary["status"] == "failed" and summary["num_train"] is None


def test_no_training_images_is_a_clear_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "data" / "train" / name).mkdir(parents=True)
        write_image(tmp_path / "data" / "val" / name / "1.png")
    with pytest.raises(Exception, match="No usable picture is left for training"):
        train(_config(tmp_path / "data", tmp_path))


def test_a_frozen_backbone_is_one_probe_fit_and_it_says_what_it_chose(colours, tmp_path):
    events = []
    summary = train(_config(colours, tmp_path, freeze="all", epochs=7), on_event=events.append)
    assert summary["epochs_run"] == 1 and not [e for e in events if isinstance(e, Step)]  # no epochs of SGD
    probe = summary["probe"]
    assert probe["folds"] == 5 and len(probe["tried"]) == len(PENALTIES)
    lowest = min(t["cv_loss"] for t in probe["tried"])
    assert next(t for t in probe["tried"] if t["penalty"] == probe["penalty"])["cv_loss"] >= lowest
    assert "regularisation strengths were tried by 5-fold cross-validation" in summary["message"]
    assert json.loads((Path(summary["run_dir"]) / "config.json").read_text())["epochs"] == 1  # as it ran


def test_fine_tuning_starts_from_the_probe(colours, tmp_path):
    """LP-FT: with a learning rate too small to move anything, an epoch of training ends where the probe began.

    Trained through the whole model (no feature cache) with every block frozen, so BatchNorm statistics stay put and
    only the head's starting point decides.
    """
    import torch

    from tl_core.backbones import create_backbone

    start = dict(freeze="all", feature_cache=False, epochs=1, lr=1e-12, warmup_epochs=0.0)
    from_zero = train(_config(colours, tmp_path, **start))  # random weights: no probe, the head starts at zero
    assert from_zero.get("probe") is None and from_zero["best_val_accuracy"] == pytest.approx(1 / 3)

    # The same random backbone saved as a weights file, so that it counts as pretrained and the probe comes first.
    weights = tmp_path / "backbone.pth"
    torch.save(create_backbone("test_efficientnet", 3, "none", seed=0, img_size=32).model.state_dict(), weights)
    probe_only = train(_config(colours, tmp_path, freeze="all", weights=str(weights)))
    lpft = train(_config(colours, tmp_path, **start, weights=str(weights)))
    assert lpft["probe"]["penalty"] == probe_only["probe"]["penalty"] and lpft["epochs_run"] == 1
    assert lpft["best_val_accuracy"] == probe_only["best_val_accuracy"] > 0.9
    # Blocks training, with augmentation: BatchNorm statistics stay those the head was fitted on, so nothing moves.
    moving = train(_config(colours, tmp_path, **{**start, "freeze": "1", "augment": "on"}, weights=str(weights)))
    assert moving["best_val_accuracy"] == probe_only["best_val_accuracy"]
    resolved = json.loads((Path(moving["run_dir"]) / "config.json").read_text())
    assert resolved["probe"] and resolved["lr"] == 1e-12  # asked for; without it, LP-FT's own default:
    auto_lr = train(_config(colours, tmp_path, freeze="1", epochs=1, weights=str(weights), lr=None))
    assert json.loads((Path(auto_lr["run_dir"]) / "config.json").read_text())["lr"] == 3e-5


def test_a_new_run_continues_from_a_finished_runs_weights(colours, tmp_path):
    first = train(_config(colours, tmp_path, epochs=4))
    weights = str(Path(first["run_dir"]) / "model.safetensors")
    second = train(_config(colours, tmp_path, epochs=1, weights=weights, probe=False))
    assert second["status"] == "finished" and second["weights"] == weights
    fresh = train(_config(colours, tmp_path, epochs=1, probe=False))
    # the body it starts from has learnt the colours: its first epoch beats a fresh network's first epoch
    assert second["val_loss"] < fresh["val_loss"]

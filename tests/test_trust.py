"""Trust: calibration, the operating point, the mislabel finder, data set versions and the data-efficiency runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tl_core import calibration, efficiency
from tl_core.backbones import create_backbone
from tl_core.data import UNUSED, keep_training_share, scan_dataset
from tl_core.data_versions import EXCLUDE, version_record, write_version
from tl_core.decision import calibrated_probabilities, decide
from tl_core.devices import pick_device
from tl_core.features import by_sample, pretrained_features
from tl_core.mislabels import find_suspects
from tl_core.operating_point import confusion_at, not_sure_table, threshold_table
from tl_core.preprocess import InputSpec
from tl_core.training import TrainConfig, train


def test_temperature_scaling_calms_an_over_confident_model():
    # 400 pictures, 3 classes, right 70% of the time but always 99% sure: the temperature must go up and the
    # validation negative log-likelihood and calibration error down; the answers stay the same.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    answers = np.where(rng.random(400) < 0.7, labels, (labels + 1) % 3)
    logits = np.full((400, 3), -4.0)
    logits[np.arange(400), answers] = 4.0
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    fitted = calibration.calibrate(log_probs, labels)
    assert fitted.temperature > 2
    assert fitted.nll_after < fitted.nll_before - 0.5
    assert fitted.ece_before > 0.25 and fitted.ece_after < 0.05
    after = calibrated_probabilities(log_probs, fitted.temperature)
    assert (after.argmax(1) == answers).all()
    assert after.max(1).mean() == pytest.approx(0.7, abs=0.03)  # now about as sure as it is right


def test_too_few_pictures_keep_the_models_own_confidence():
    log_probs = np.log(np.array([[0.9, 0.1]] * 5))
    assert calibration.fit_temperature(log_probs, np.array([0, 1, 0, 1, 0])) == 1.0


def test_the_threshold_moves_the_confusion_matrix_as_by_hand():
    names = ["good", "defect"]
    p_defect = np.array([0.9, 0.6, 0.4, 0.3, 0.2, 0.7, 0.1, 0.35])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    probs = np.stack([1 - p_defect, p_defect], 1)
    at_half = confusion_at(probs, labels, names, {"kind": "binary", "positive": "defect", "threshold": 0.5})
    # defect found at >= 0.5: 0.9, 0.6 (of 4 defects); false alarm: 0.7
    assert at_half.tolist() == [[3, 1], [2, 2]]
    at_low = confusion_at(probs, labels, names, {"kind": "binary", "positive": "defect", "threshold": 0.3})
    # >= 0.3: defects 0.9, 0.6, 0.4, 0.3; false alarms 0.7, 0.35
    assert at_low.tolist() == [[2, 2], [0, 4]]
    row = next(r for r in threshold_table(probs, labels, names, "defect") if r["threshold"] == 0.3)
    assert (row["found"], row["of"], row["false_alarms"]) == (4, 4, 2)
    assert row["precision"] == pytest.approx(4 / 6)


def test_not_sure_under_the_line():
    names = ["a", "b", "c"]
    probs = np.array([[0.8, 0.1, 0.1], [0.4, 0.35, 0.25], [0.1, 0.2, 0.7], [0.5, 0.45, 0.05]])
    labels = np.array([0, 1, 2, 0])
    rule = {"kind": "not_sure_below", "threshold": 0.6}
    assert [a["sure"] for a in decide(probs, names, rule)] == [True, False, True, False]
    assert confusion_at(probs, labels, names, rule).sum() == 2  # only the sure answers are counted
    row = next(r for r in not_sure_table(probs, labels) if r["threshold"] == 0.6)
    assert row["answered"] == 0.5 and row["accuracy"] == 1.0


@pytest.fixture(scope="module")
def flipped_digits(digits_dir, tmp_path_factory):
    """The real digits with one 'zero' moved into the 'one' folder: a mislabelled picture. (A 'three' moved into
    'eight' ranked 11th: that scan looks like both, and ten honest pictures looked stranger.)"""
    root = tmp_path_factory.mktemp("flipped") / "digits"
    shutil.copytree(digits_dir, root)
    zero = sorted((root / "zero").iterdir())[0]
    zero.rename(root / "one" / "was-a-zero.png")
    return root


def test_a_flipped_label_is_ranked_first(flipped_digits):
    manifest = scan_dataset(flipped_digits, seed=0)
    backbone = create_backbone("tf_efficientnet_lite0", len(manifest.class_names), "offline", 0, 64)
    spec = InputSpec.from_data_config(backbone.data_config, 64)
    features, _ = pretrained_features(manifest, "tf_efficientnet_lite0", backbone, spec, pick_device("cpu"))
    suspects = find_suspects(manifest, by_sample(manifest, features))
    assert suspects and suspects[0].relpath == "one/was-a-zero.png"
    assert (suspects[0].label, suspects[0].suggested) == ("one", "zero")
    assert len(suspects) <= len(manifest.samples) // 10  # a short list, not every picture


def test_a_new_version_changes_only_the_copy(flipped_digits, tmp_path):
    manifest = scan_dataset(flipped_digits, seed=0)
    before = {p.relative_to(flipped_digits): p.read_bytes() for p in flipped_digits.rglob("*") if p.is_file()}
    dropped = sorted(s.relpath for s in manifest.samples if s.relpath.startswith("two/"))[0]
    version = write_version(manifest, {"one/was-a-zero.png": "zero", dropped: EXCLUDE}, tmp_path)
    after = {p.relative_to(flipped_digits): p.read_bytes() for p in flipped_digits.rglob("*") if p.is_file()}
    assert after == before  # the original is untouched
    assert version.name == "digits-v2"
    assert (version / "zero" / "was-a-zero.png").exists() and not (version / "one" / "was-a-zero.png").exists()
    assert not (version / dropped).exists()
    rescanned = scan_dataset(version, seed=0)
    assert len(rescanned.samples) == len(manifest.samples) - 1
    assert rescanned.class_counts()["zero"] == manifest.class_counts()["zero"] + 1
    assert version_record(version)["excluded"] == [dropped]
    assert write_version(rescanned, {}, tmp_path).name == "digits-v3"  # a version of a version: the next number


def test_training_shares_are_nested_stratified_and_leave_validation_whole(digits_dir):
    manifest = scan_dataset(digits_dir, seed=0)
    kept = {}
    for share in efficiency.SHARES:
        subset = keep_training_share(manifest, share, seed=0)
        assert [s.relpath for s in subset.split("val")] == [s.relpath for s in manifest.split("val")]
        counts = subset.class_counts("train")
        assert set(counts.values()) == {max(1, int(np.ceil(share * 16)))}  # 16 training pictures per class
        kept[share] = {s.relpath for s in subset.split("train")}
        assert len(subset.split(UNUSED)) == len(manifest.split("train")) - len(kept[share])
    assert kept[0.1] <= kept[0.25] <= kept[0.5] <= kept[1.0]


def test_data_efficiency_runs_train_on_the_stated_share(digits_dir, tmp_path):
    manifest = scan_dataset(digits_dir, seed=0)
    run_config = {**TrainConfig(str(digits_dir), img_size=32, epochs=1, runs_dir=str(tmp_path)).to_dict()}
    config = efficiency.scratch_config(run_config, 0.25)
    assert (config.weights, config.freeze, config.train_share) == ("none", "none", 0.25)
    assert config.epochs == efficiency.SCRATCH_EPOCHS
    summary = train(TrainConfig(**{**config.to_dict(), "epochs": 1, "backbone": "test_efficientnet"}))
    assert summary["num_train"] == len(keep_training_share(manifest, 0.25, 0).split("train")) == 40
    assert summary["num_val"] == len(manifest.split("val"))
    split = json.loads((tmp_path / summary["run_dir"].split("/")[-1] / "split.json").read_text())
    used = {f["path"] for f in split["files"] if f["split"] == "train"}
    assert used == {s.relpath for s in keep_training_share(manifest, 0.25, 0).split("train")}


def test_pretrained_points_fit_heads_on_each_share(digits_dir):
    manifest = scan_dataset(digits_dir, seed=0)
    features = torch.randn(len(manifest.samples), 10)
    for i, s in enumerate(manifest.samples):
        features[i, s.label] += 6  # separable: every share learns it
    points = efficiency.pretrained_points(manifest, features)
    assert [p["num_train"] for p in points] == [20, 40, 80, 160]
    assert all(p["accuracy"] > 0.9 for p in points[1:])
    scratch = {1.0: 0.5}
    assert efficiency.sentence(points, scratch).startswith("Pretrained with 10% of the pictures")


def test_a_version_of_a_data_set_with_its_own_split_folders_keeps_them(tmp_path):
    from tests.conftest import write_image

    for split, n in (("Train", 6), ("Val", 2)):
        for name, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            for i in range(n):
                write_image(tmp_path / "pets" / split / name / f"{name}{i}.png", color=colour)
    manifest = scan_dataset(tmp_path / "pets", seed=0)
    version = write_version(manifest, {"Train/cat/cat0.png": "dog"}, tmp_path / "versions")
    assert not (version / "train").exists() or (version / "train").samefile(version / "Train")
    rescanned = scan_dataset(version, seed=0)
    assert rescanned.class_counts("train") == {"cat": 5, "dog": 7}  # none lost to an empty 'train/' beside 'Train/'
    assert not list((tmp_path / "versions").glob("*.tmp"))

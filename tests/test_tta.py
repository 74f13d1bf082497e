"""Test-time augmentation: each picture labelled with its mirror image, kept only where validation says it helps."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.test_training import _config
from tl_core.export import export_bundle
from tl_core.predict import Predictor
from tl_core.training import train


@pytest.fixture
def left_or_right(tmp_path) -> Path:
    """Two classes that are each other's mirror image: red fading to blue, or blue fading to red, left to right."""
    root = tmp_path / "sides"
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 32)[None, :, None]
    for name, flip in (("red_left", False), ("red_right", True)):
        for i in range(12):
            red, blue = np.array([230, 20, 20]), np.array([20, 20, 230])
            picture = red * (1 - ramp) + blue * ramp + rng.normal(0, 12, (32, 32, 3))
            picture = np.clip(picture[:, ::-1] if flip else picture, 0, 255).astype(np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(picture)).save(root / name / f"{i}.png")
    return root


def test_mirroring_that_confuses_the_classes_is_not_kept(left_or_right, tmp_path):
    summary = train(
        _config(left_or_right, tmp_path, epochs=8, tta="auto", augment="off")
    )  # training flips would hide the sides
    tta = summary["tta"]
    assert tta["val_accuracy_plain"] >= 0.75  # the model tells the sides apart...
    assert tta["val_loss_mirrored"] > tta["val_loss_plain"]  # ...and its mirror images say the opposite
    assert tta["mirror"] is False and summary["best_val_accuracy"] == tta["val_accuracy_plain"]
    assert Predictor.from_run(summary["run_dir"]).mirror is False
    assert "mirror images did not help" in summary["message"]


def test_mirroring_on_averages_each_picture_with_its_mirror_everywhere(left_or_right, tmp_path):
    summary = train(_config(left_or_right, tmp_path, epochs=2, tta="on"))
    run = Path(summary["run_dir"])
    assert summary["tta"]["mirror"] is True
    assert summary["best_val_accuracy"] == summary["tta"]["val_accuracy_mirrored"]
    predictor = Predictor.from_run(run)
    rows = list(csv.DictReader((run / "predictions.csv").read_text(encoding="utf-8").splitlines()))
    pictures = [Image.open(r["path"]).convert("RGB") for r in rows]
    mirrored = [ImageOps.mirror(p) for p in pictures]
    probs, probs_of_mirrors = predictor.probabilities(pictures), predictor.probabilities(mirrored)
    np.testing.assert_allclose(probs, probs_of_mirrors, atol=1e-5)  # a picture and its mirror: the same answer
    # predictions.csv (what Evaluate shows) holds the same averaged confidences as Predict gives
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], probs.max(1), atol=1e-4)
    # and the exported bundle says so, in its preprocessing and its card
    bundle = export_bundle(run, tmp_path / "bundle.zip")
    with zipfile.ZipFile(bundle) as zf:
        assert json.loads(zf.read("preprocessing.json"))["mirror_average"] is True
        assert "mirror image" in zf.read("README.md").decode()

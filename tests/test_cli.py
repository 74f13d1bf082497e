"""The command line, end to end, with the real offline EfficientNet-Lite0 weights on real handwritten digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from tests.test_training import SUMMARY_KEYS

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tl_core", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_train_predict_export_on_real_digits(digits_dir, tmp_path):
    result = _cli(
        "train",
        str(digits_dir),
        "--backbone",
        "tf_efficientnet_lite0",
        "--weights",
        "offline",
        "--freeze",
        "all",
        "--img-size",
        "96",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) >= SUMMARY_KEYS
    assert summary["weights"] == "offline" and summary["status"] == "finished"
    assert summary["num_classes"] == 10 and summary["num_train"] == 160 and summary["num_val"] == 40
    assert summary["best_val_accuracy"] >= 0.6  # chance is 0.1
    assert "Training" in result.stderr  # the progress bar

    # New digits the model has never seen (the data set took the first 20 of each class).
    digits = load_digits()
    names = sorted(p.name for p in digits_dir.iterdir() if p.is_dir())
    new_images, truths = [], []
    for label, name in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]):
        index = np.flatnonzero(digits.target == label)[30]
        path = tmp_path / f"new_{name}.png"
        Image.fromarray((255 - digits.images[index] / 16 * 255).astype(np.uint8)).resize((64, 64)).save(path)
        new_images.append(str(path))
        truths.append(name)
    assert set(truths) == set(names)
    predicted = _cli("predict", summary["run_dir"], *new_images, "--json")
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    assert [r["path"] for r in rows] == new_images
    assert all(set(r) >= {"path", "label", "confidence", "top_k"} for r in rows)
    correct = sum(r["label"] == t for r, t in zip(rows, truths, strict=True))
    assert correct >= 6, rows

    bundle = tmp_path / "model.zip"
    exported = _cli("export", summary["run_dir"], "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(bundle) as zf:
        assert {"model.safetensors", "labels.json", "preprocessing.json", "predict.py", "README.md"} <= set(
            zf.namelist()
        )
        zf.extractall(tmp_path / "bundle")
    standalone = subprocess.run(
        [sys.executable, "predict.py", new_images[3]],
        cwd=tmp_path / "bundle",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert standalone.returncode == 0, standalone.stderr
    assert json.loads(standalone.stdout)["label"] == rows[3]["label"]
    assert (
        json.loads(standalone.stdout)["confidence"] == round(rows[3]["confidence"], 6)
        or abs(json.loads(standalone.stdout)["confidence"] - rows[3]["confidence"]) < 1e-3
    )


def test_failures_exit_non_zero_with_one_line(tmp_path, digits_dir):
    missing = _cli("train", str(tmp_path / "nope"), "--json")
    assert missing.returncode != 0 and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and "no folder or zip" in missing.stderr

    no_weights = _cli(
        "train", str(digits_dir), "--backbone", "resnet18", "--weights", "offline", "--runs-dir", str(tmp_path / "runs")
    )
    assert no_weights.returncode != 0
    assert no_weights.stderr.strip().splitlines()[-1].startswith("headstart: No offline weights")

    bad_freeze = _cli("train", str(digits_dir), "--freeze", "most")
    assert bad_freeze.returncode != 0 and "Freeze takes all, none or a number of blocks" in bad_freeze.stderr

"""Grad-CAM points at the part of the picture that decides the class."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.conftest import write_image
from tl_core.explain import grad_cam, overlay
from tl_core.predict import Predictor
from tl_core.training import TrainConfig, train


def test_heat_map_follows_the_deciding_region(tmp_path):
    # Class "square": a bright square somewhere on dark noise; class "plain": the noise alone.
    rng = np.random.default_rng(0)
    for name in ("plain", "square"):
        (tmp_path / "data" / name).mkdir(parents=True, exist_ok=True)
        for i in range(20):
            pixels = rng.integers(0, 40, (96, 96, 3)).astype(np.uint8)
            if name == "square":
                y0, x0 = rng.integers(0, 72, size=2)
                pixels[y0 : y0 + 24, x0 : x0 + 24] = 250
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    summary = train(
        TrainConfig(
            str(tmp_path / "data"),
            backbone="test_resnet",
            weights="none",
            freeze="none",
            epochs=10,
            batch_size=8,
            img_size=96,
            lr=1e-2,
            augment="off",
            early_stopping=0,
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert summary["best_val_accuracy"] == 1.0
    predictor = Predictor.from_run(summary["run_dir"])

    probe = rng.integers(0, 40, (96, 96, 3)).astype(np.uint8)
    probe[30:58, 62:90] = 250  # the square on the right
    heat, explained = grad_cam(predictor, Image.fromarray(probe))
    assert predictor.class_names[explained] == "square"
    assert heat.shape == (predictor.spec.img_size, predictor.spec.img_size)
    assert heat.min() >= 0 and heat.max() <= 1
    half = heat.shape[1] // 2
    assert heat[:, half:].mean() > 2 * heat[:, :half].mean()  # the evidence is where the square is

    picture = overlay(Image.fromarray(probe), heat, predictor.spec.img_size)
    assert picture.size == (predictor.spec.img_size, predictor.spec.img_size)


def test_grad_cam_on_a_transformer(tmp_path):
    for name, colour in [("a", (220, 40, 40)), ("b", (40, 40, 220))]:
        for i in range(6):
            write_image(tmp_path / "data" / name / f"{i}.png", color=colour)
    summary = train(
        TrainConfig(
            str(tmp_path / "data"),
            backbone="test_vit",
            weights="none",
            freeze="none",
            epochs=1,
            batch_size=4,
            runs_dir=str(tmp_path / "runs"),
        )
    )
    predictor = Predictor.from_run(summary["run_dir"])
    heat, _ = grad_cam(predictor, Image.new("RGB", (50, 40), (200, 50, 50)))
    assert heat.shape == (predictor.spec.img_size, predictor.spec.img_size) and np.isfinite(heat).all()

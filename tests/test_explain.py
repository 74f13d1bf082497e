"""Grad-CAM points at the part of the picture that decides the class, for convolutional networks and transformers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tl_core.explain import grad_cam, overlay
from tl_core.predict import Predictor
from tl_core.training import TrainConfig, train


@pytest.mark.parametrize(("backbone", "size", "lr"), [("test_resnet", 96, 1e-2), ("test_vit", 64, 3e-3)])
def test_heat_map_follows_the_deciding_region(tmp_path, backbone, size, lr):
    # Class "square": a bright square somewhere on dark noise; class "plain": the noise alone.
    rng = np.random.default_rng(0)
    side = size // 4
    for name in ("plain", "square"):
        (tmp_path / "data" / name).mkdir(parents=True, exist_ok=True)
        for i in range(40):  # 20 a class left the tiny transformer's result to the shuffle's luck
            pixels = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
            if name == "square":
                y0, x0 = rng.integers(0, size - side, size=2)
                pixels[y0 : y0 + side, x0 : x0 + side] = 250
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    summary = train(
        TrainConfig(
            str(tmp_path / "data"),
            backbone=backbone,
            weights="none",
            freeze="none",
            epochs=10,
            batch_size=8,
            img_size=size,
            lr=lr,
            augment="off",
            early_stopping=0,
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert summary["best_val_accuracy"] == 1.0
    predictor = Predictor.from_run(summary["run_dir"])

    probe = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
    probe[size // 3 : size // 3 + side, size - side - 2 : size - 2] = 250  # the square on the right
    heat, explained = grad_cam(predictor, Image.fromarray(probe))
    assert predictor.class_names[explained] == "square"
    assert heat.shape == (predictor.spec.img_size, predictor.spec.img_size)
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)  # a map, not all zeros
    half = heat.shape[1] // 2
    assert heat[:, half:].mean() > 2 * heat[:, :half].mean()  # the evidence is where the square is

    picture = overlay(Image.fromarray(probe), heat, predictor.spec.img_size)
    assert picture.size == (predictor.spec.img_size, predictor.spec.img_size)

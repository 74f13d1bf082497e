"""Backbone speed is measured on this machine and remembered for the Model page."""

from __future__ import annotations

from tl_core.devices import describe_device
from tl_core.speed import measure_speed, remember_speed, remembered_speeds


def test_measure_and_remember(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path))
    small = measure_speed("test_efficientnet", batch_size=4, img_size=32, seconds=0.2)
    large = measure_speed("test_efficientnet", batch_size=4, img_size=128, seconds=0.2)
    assert small["device"] == describe_device() and small["img_size"] == 32
    assert small["inference_images_per_second"] > small["training_images_per_second"] > 0
    assert small["training_images_per_second"] > large["training_images_per_second"]  # 16x the pixels costs more
    assert remembered_speeds() == {}
    remember_speed(small)
    assert remembered_speeds()["test_efficientnet"]["training_images_per_second"] == small["training_images_per_second"]

"""Shared fixtures: every test writes runs, caches and data under its own temporary folders, never the repo's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.samples import build_sample
from tl_core.training import TrainConfig, train


@pytest.fixture(scope="session")
def session_dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("headstart")
    return {name: base / name for name in ("runs", "cache", "data")}


@pytest.fixture(scope="session", autouse=True)
def headstart_env(session_dirs):
    """Point Headstart's folders at temporary ones (the cache is shared by the session: decoding once is the point)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_RUNS_DIR", str(session_dirs["runs"]))
        mp.setenv("HEADSTART_CACHE_DIR", str(session_dirs["cache"]))
        mp.setenv("HEADSTART_DATA_DIR", str(session_dirs["data"]))
        mp.setenv("HF_HUB_OFFLINE", "1")  # never wait on the network in tests
        yield session_dirs


@pytest.fixture(scope="session")
def digits_dir(headstart_env, session_dirs) -> Path:
    """A small real data set: scikit-learn's handwritten digits, 10 classes x 20 images, 64 px PNGs."""
    return build_sample("digits", session_dirs["data"], per_class=20)


@pytest.fixture(scope="session")
def finished_run(headstart_env, session_dirs, digits_dir) -> Path:
    """One real finished run: offline EfficientNet-Lite0, backbone frozen, cached features (a few seconds)."""
    config = TrainConfig(
        str(digits_dir), weights="offline", freeze="all", epochs=4, img_size=64, runs_dir=str(session_dirs["runs"])
    )
    summary = train(config)
    assert summary["status"] == "finished"
    return Path(summary["run_dir"])


def write_image(path: Path, size=(32, 32), color=(200, 30, 30), mode="RGB", fmt=None) -> Path:
    """A small solid image with a little noise, so that no two are byte-identical by accident."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    pixels = np.clip(np.array(color, dtype=np.int16) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
    img = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


@pytest.fixture
def manager():
    """A job manager of the test's own, shut down after it."""
    from tl_core.jobs import JobManager

    jobs = JobManager()
    yield jobs
    jobs.shutdown()


@pytest.fixture
def tiny_data(tmp_path):
    """Two classes of 12 small solid pictures (red, blue): what a tiny model learns in a few steps."""
    for name, color in [("a", (200, 40, 40)), ("b", (40, 40, 200))]:
        for i in range(12):
            write_image(tmp_path / "data" / name / f"{i}.png", color=color)
    return tmp_path / "data"


def wait_until(condition, timeout: float = 60.0) -> bool:
    """Whether `condition()` came true within `timeout` seconds (polled every 20 ms)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False

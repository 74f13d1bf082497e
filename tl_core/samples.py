"""Sample data sets to try Headstart with: one that works offline, and well-known public ones when online."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tl_core.errors import DataError


@dataclass(frozen=True)
class SampleSet:
    key: str
    title: str
    description: str
    needs_internet: bool
    build: Callable[[Path, int], Path]


def _build_digits(dest: Path, per_class: int) -> Path:
    """scikit-learn's handwritten digits (8x8 scans, shipped inside the package), enlarged to 64 px PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for label, name in enumerate(names):
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(digits.target == label)[:per_class]:
            pixels = (255 - digits.images[i] / 16 * 255).astype(np.uint8)  # dark ink on white paper
            Image.fromarray(pixels, "L").resize((64, 64), Image.Resampling.BILINEAR).save(folder / f"{i:04d}.png")
    return dest


def _build_eurosat(dest: Path, per_class: int) -> Path:
    """EuroSAT: Sentinel-2 satellite tiles of 10 land uses (crops, forest, rivers...), through torchvision."""
    from torchvision.datasets import EuroSAT

    try:
        data = EuroSAT(root=str(dest.parent / "_downloads"), download=True)
    except Exception as exc:  # noqa: BLE001 - network failures come in many kinds
        raise DataError(
            f"EuroSAT could not be downloaded ({exc}). It needs the internet; try the offline sample."
        ) from exc
    taken: dict[int, int] = {}
    for path, label in data.samples:
        if taken.get(label, 0) >= per_class:
            continue
        folder = dest / data.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").save(folder / Path(path).name.replace(".jpg", ".png"))
        taken[label] = taken.get(label, 0) + 1
    return dest


SAMPLES: dict[str, SampleSet] = {
    s.key: s
    for s in [
        SampleSet(
            "digits",
            "Handwritten digits (offline)",
            "Scanned handwritten digits 0-9 from scikit-learn: small, works without internet.",
            False,
            _build_digits,
        ),
        SampleSet(
            "eurosat",
            "EuroSAT land use (internet)",
            "Satellite pictures of farmland, forest, rivers, towns... 10 classes; downloaded once.",
            True,
            _build_eurosat,
        ),
    ]
}


def build_sample(key: str, into: Path, per_class: int = 50) -> Path:
    """Write the sample set `key` as one folder per class under `into`, once; returns that folder."""
    sample = SAMPLES[key]
    dest = Path(into) / f"sample-{key}-{per_class}"
    marker = dest / ".headstart-complete"
    if not marker.exists():
        sample.build(dest, per_class)
        marker.touch()
    return dest

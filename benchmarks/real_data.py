"""Real image data sets from the package registries, laid out as Headstart reads them (one folder per class).

    pip install elpv-dataset            # PyPI, 87 MB: solar-cell scans (CC BY-NC-SA 4.0 data, Apache-2.0 code)
    apt-get install dataset-fashion-mnist   # Debian, 31 MB: Zalando product photos (MIT)
    python benchmarks/real_data.py [OUT]    # -> OUT/elpv/{functional,defective}, OUT/fashion_mnist/<10 classes>

Not a dependency of Headstart: only the benchmarks use them (`bench_probe.py`, `bench_auto.py`). elpv keeps the
2,223 cells whose label is certain (defect probability 0 or 1; the 401 at 0.33 and 0.67 are left out).
Fashion-MNIST keeps the first 300 training pictures of each class; `fashion_mnist_pictures(out, 50_000)` writes the
first 5,000 of each for the large-data benchmark (`bench_large.py`; the training set has 6,000 per class).
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_SOURCE = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]


def elpv(out: Path) -> None:
    import elpv_dataset

    source = Path(elpv_dataset.__file__).parent / "data"
    table = np.genfromtxt(source / "labels.csv", dtype=["|S19", "<f8", "|S4"], names=["path", "probability", "type"])
    classes = {0.0: "functional", 1.0: "defective"}
    for path, probability, kind in zip(
        np.char.decode(table["path"]), table["probability"], np.char.decode(table["type"]), strict=True
    ):
        name = classes.get(round(float(probability), 2))
        if name is not None:
            (out / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(source / path, out / name / f"{kind}_{Path(path).name}")


def fashion_mnist(out: Path, source: Path = FASHION_SOURCE, per_class: int = 300) -> None:
    with gzip.open(source / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(source / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    counts = np.zeros(len(FASHION_CLASSES), int)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if counts[label] < per_class:
            folder = out / FASHION_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "L").save(folder / f"train_{i:05d}.png")
            counts[label] += 1


def fashion_mnist_pictures(out: Path, total: int, source: Path = FASHION_SOURCE) -> Path:
    """`total` Fashion-MNIST pictures (an equal share per class) as PNG files under `out`, once: a folder that
    already holds them (its marker file written last) is kept as it is."""
    per_class = total // len(FASHION_CLASSES)
    if not 0 < per_class <= 6000:
        raise ValueError(f"Fashion-MNIST's training set has 6,000 pictures per class, so at most 60,000, not {total}.")
    marker = out / f".written-{per_class}-per-class"
    if not marker.exists():
        shutil.rmtree(out, ignore_errors=True)
        fashion_mnist(out, source, per_class)
        marker.touch()  # hidden: scanning skips it
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/realdata")
    elpv(root / "elpv")
    fashion_mnist(root / "fashion_mnist")
    print(f"written under {root}")

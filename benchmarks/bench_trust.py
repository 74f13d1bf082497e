"""Trust on real pictures: how many deliberately flipped labels the mislabel finder lists, how far the Quick model's
confidences are off before and after calibration, and the pretrained data-efficiency points.

    python benchmarks/bench_trust.py DATA_DIR [DATA_DIR ...] [--per-class 100] [--flip 0.05] [--img-size 224]

For each data set (one sub-folder per class): a copy with `per-class` pictures per class, of which a share `flip` of
the training and validation pictures are moved into another class's folder (seeded). A Quick model (EfficientNet-
Lite0, offline weights, the fitted head) trains on it; then the finder's list is compared with the flipped pictures
(precision: share of the list that was flipped; recall: share of the flipped that are listed) and calibration is
read from the run's summary. Prints one JSON line per data set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tl_core import efficiency  # noqa: E402
from tl_core.config import TrainConfig  # noqa: E402
from tl_core.features import features_of_run  # noqa: E402
from tl_core.mislabels import find_suspects  # noqa: E402
from tl_core.training import train  # noqa: E402


def flipped_copy(source: Path, into: Path, per_class: int, flip: float, seed: int) -> tuple[Path, set[str]]:
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    files = {c: sorted((source / c).iterdir())[:per_class] for c in classes}
    everything = [(c, f) for c in classes for f in files[c]]
    flipped_at = set(rng.choice(len(everything), size=round(flip * len(everything)), replace=False).tolist())
    target, flipped = into / source.name, set()
    for i, (c, f) in enumerate(everything):
        to = c
        if i in flipped_at:
            to = rng.choice([o for o in classes if o != c])
        (target / to).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target / to / f.name)
        if to != c:
            flipped.add(f"{to}/{f.name}")
    return target, flipped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dirs", nargs="+", type=Path)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--img-size", type=int, default=None)
    args = parser.parse_args()
    for source in args.data_dirs:
        with tempfile.TemporaryDirectory() as tmp:
            data, flipped = flipped_copy(source, Path(tmp), args.per_class, args.flip, seed=0)
            summary = train(
                TrainConfig(str(data), weights="offline", img_size=args.img_size, runs_dir=str(Path(tmp) / "runs"))
            )
            tick = time.perf_counter()
            manifest, features, config = features_of_run(summary["run_dir"])
            suspects = find_suspects(manifest, features, seed=0)
            seconds = time.perf_counter() - tick
            listed = {s.relpath for s in suspects}
            in_scope = {s.relpath for s in manifest.samples if s.split in ("train", "val")} & flipped
            first = [s.relpath in flipped for s in suspects[: len(in_scope)]]
            points = efficiency.pretrained_points(manifest, features, seed=0)
            calibration = summary["calibration"]
            print(
                json.dumps(
                    {
                        "data": source.name,
                        "pictures": len(manifest.samples),
                        "flipped": len(in_scope),
                        "listed": len(listed),
                        "precision": round(len(listed & in_scope) / max(len(listed), 1), 3),
                        "recall": round(len(listed & in_scope) / max(len(in_scope), 1), 3),
                        "precision_at_flipped": round(float(np.mean(first)) if first else 0.0, 3),
                        "finder_seconds": round(seconds, 1),
                        "val_accuracy": summary["best_val_accuracy"],
                        "temperature": calibration["temperature"],
                        "ece_before": calibration["ece_before"],
                        "ece_after": calibration["ece_after"],
                        "nll_before": calibration["nll_before"],
                        "nll_after": calibration["nll_after"],
                        "pretrained_points": [(p["share"], p["num_train"], round(p["accuracy"], 3)) for p in points],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()

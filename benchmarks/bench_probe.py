"""The fitted head (linear probe) against the old Quick model and a tuned scikit-learn logistic regression.

    python benchmarks/bench_probe.py DATA_DIR [DATA_DIR ...] [--per-class 20 50 150 0] [--img-size 224]
    python benchmarks/bench_probe.py DATA_DIR --lpft [--per-class 150] [--epochs 4] [--freeze 5] [--img-size 160]

For each data set (a folder with one sub-folder per class) and each training size (pictures per class; 0: all),
on Headstart's own split (seed 0, 20% of each class for validation, the same validation pictures at every size):
  - `probe`: Headstart's feature extraction as the app runs it now (`train(freeze=all)`: the head fitted by L-BFGS,
    its regularisation chosen by 5-fold cross-validation on the training pictures);
  - `quick_sgd`: the head trained by epochs as the Quick model did before (10 epochs, lr 1e-3, probe off);
  - `sklearn_cv`: scikit-learn's LogisticRegressionCV (the same penalty grid, 5-fold CV, standardised features)
    on the very same cached features; `sklearn_best`: the best of that grid on the validation set itself (an
    upper bound no honest method can see).
With --lpft: fine-tuning (the last blocks train, augmentation on) from the probe's head (LP-FT, the default now)
against the same fine-tuning from a zero head (probe off), same data, epochs and seed.
EfficientNet-Lite0 with its offline ImageNet weights. Prints one JSON line per data set and size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tl_core import cache  # noqa: E402
from tl_core.backbones import create_backbone  # noqa: E402
from tl_core.config import TrainConfig  # noqa: E402
from tl_core.data import scan_dataset  # noqa: E402
from tl_core.preprocess import InputSpec  # noqa: E402
from tl_core.probe import PENALTIES  # noqa: E402
from tl_core.training import train  # noqa: E402

BACKBONE = "tf_efficientnet_lite0"


def subset(manifest, per_class: int, seed: int = 0):
    """The manifest with at most `per_class` training pictures per class; the others leave every split.

    All pictures stay in the manifest, so its fingerprint, and with it the cached features, is the same at every size.
    """
    if not per_class:
        return manifest
    rng = np.random.default_rng(seed)
    keep = set()
    for label in range(len(manifest.class_names)):
        members = [i for i, s in enumerate(manifest.samples) if s.split == "train" and s.label == label]
        keep.update(rng.permutation(members)[:per_class].tolist())
    samples = [
        s if s.split != "train" or i in keep else dataclasses.replace(s, split="unused")
        for i, s in enumerate(manifest.samples)
    ]
    return dataclasses.replace(manifest, samples=samples)


def sklearn_scores(manifest, img_size: int) -> dict:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    backbone = create_backbone(BACKBONE, len(manifest.class_names), "offline", 0, img_size)
    spec = InputSpec.from_data_config(backbone.data_config, img_size)
    key = cache.feature_key(manifest, BACKBONE, backbone.weights_id, spec.img_size)
    features = np.load(cache.feature_path(key))  # written by the probe run just before, on the same pictures
    rows = {split: cache.rows_for(manifest, manifest.split(split)) for split in ("train", "val")}
    y = {split: np.array([s.label for s in manifest.split(split)]) for split in ("train", "val")}
    x = {split: np.asarray(features)[rows[split]] for split in rows}
    n = len(y["train"])
    cs = [1 / (p * n) for p in PENALTIES]
    tick = time.perf_counter()
    cv = min(5, int(np.bincount(y["train"]).min()))
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=cs, cv=cv, max_iter=3000))
    model.fit(x["train"], y["train"])
    cv_seconds = time.perf_counter() - tick
    best = 0.0
    for c in cs:
        oracle = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(x["train"], y["train"])
        best = max(best, oracle.score(x["val"], y["val"]))
    return {"sklearn_cv": round(model.score(x["val"], y["val"]), 4), "sklearn_cv_seconds": round(cv_seconds, 2),
            "sklearn_best": round(best, 4)}  # fmt: skip


def lpft_row(data: str, per_class: int, args) -> dict:
    manifest = subset(scan_dataset(data, seed=0), per_class)
    row = {"data": Path(data).name, "train_per_class": per_class or "all", "freeze": args.freeze,
           "epochs": args.epochs, "img_size": args.img_size}  # fmt: skip
    row["lr"] = args.lr
    for name, probe in (("lpft", True), ("zero_head", False)):
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as runs:
            config = TrainConfig(
                data, backbone=BACKBONE, weights="offline", freeze=args.freeze, epochs=args.epochs,
                img_size=args.img_size, runs_dir=runs, probe=probe, lr=args.lr,
            )  # fmt: skip
            tick = time.perf_counter()
            summary = train(config, manifest=manifest)
            row[name] = summary["best_val_accuracy"]
            row[f"{name}_history"] = [round(h["val_accuracy"], 4) for h in _history(summary["run_dir"])]
            row[f"{name}_seconds"] = round(time.perf_counter() - tick, 1)
    return row


def _history(run_dir: str) -> list[dict]:
    from tl_core.runs import read_metrics

    return [e for e in read_metrics(Path(run_dir)) if e.get("event") == "epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--per-class", type=int, nargs="+", default=[20, 50, 150, 0])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--lpft", action="store_true", help="compare fine-tuning from the probe and from zero")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--freeze", default="5")
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate of the fine-tuning (default: Headstart's)"
    )
    parser.add_argument("--only", choices=["lpft", "zero_head"], default=None)
    args = parser.parse_args()
    os.environ.setdefault("HEADSTART_CACHE_DIR", tempfile.mkdtemp(prefix="bench-probe-cache-"))
    if args.lpft:
        for data in args.data:
            for per_class in args.per_class:
                print(json.dumps(lpft_row(data, per_class, args)), flush=True)
        return
    for data in args.data:
        full = scan_dataset(data, seed=0)
        for per_class in args.per_class:
            manifest = subset(full, per_class)
            with tempfile.TemporaryDirectory() as runs:
                base = dict(backbone=BACKBONE, weights="offline", freeze="all", img_size=args.img_size, runs_dir=runs)
                tick = time.perf_counter()
                probe = train(TrainConfig(data, **base), manifest=manifest)
                probe_wall = time.perf_counter() - tick
                tick = time.perf_counter()
                quick = train(TrainConfig(data, **base, probe=False), manifest=manifest)
                quick_wall = time.perf_counter() - tick
            row = {
                "data": Path(data).name,
                "train_per_class": per_class or "all",
                "num_train": probe["num_train"],
                "num_val": probe["num_val"],
                "probe": probe["best_val_accuracy"],
                "probe_fit_seconds": probe["probe"]["seconds"],
                "probe_run_seconds": round(probe_wall, 1),
                "probe_penalty": probe["probe"]["penalty"],
                "quick_sgd": quick["best_val_accuracy"],
                "quick_sgd_run_seconds": round(quick_wall, 1),
                **sklearn_scores(manifest, args.img_size),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

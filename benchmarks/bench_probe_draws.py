"""The fitted head against scikit-learn over several random draws of a small training set, and the penalty rule.

    python benchmarks/bench_probe_draws.py DATA_DIR PER_CLASS [--draws 6]

With a few dozen training pictures one draw decides much: this repeats `bench_probe.py`'s comparison on `--draws`
different draws of PER_CLASS training pictures per class (the same validation pictures), on the same cached
EfficientNet-Lite0 features, for the probe's penalty rule (1-SE on the cross-validated loss: Headstart's), two
others (the lowest loss; the best cross-validated accuracy) and scikit-learn's LogisticRegressionCV.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_probe import BACKBONE, subset  # noqa: E402

from tl_core import probe  # noqa: E402
from tl_core.backbones import create_backbone  # noqa: E402
from tl_core.data import scan_dataset  # noqa: E402
from tl_core.devices import pick_device  # noqa: E402
from tl_core.features import by_sample, pretrained_features  # noqa: E402
from tl_core.preprocess import InputSpec  # noqa: E402

RULES = {
    "one_standard_error": probe._one_standard_error_choice,
    "lowest_loss": lambda tried, _: min(tried, key=lambda t: t["cv_loss"])["penalty"],
    "best_accuracy": lambda tried, _: max(tried, key=lambda t: (t["cv_accuracy"], t["penalty"]))["penalty"],
}


def main() -> None:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("per_class", type=int)
    parser.add_argument("--draws", type=int, default=6)
    args = parser.parse_args()
    whole = scan_dataset(args.data, seed=0)
    backbone = create_backbone(BACKBONE, len(whole.class_names), "offline", 0, 224)
    spec = InputSpec.from_data_config(backbone.data_config, 224)
    features = by_sample(whole, pretrained_features(whole, BACKBONE, backbone, spec, pick_device("cpu"))[0])
    scores: dict[str, list[float]] = {name: [] for name in [*RULES, "sklearn_cv"]}
    for draw in range(args.draws):
        manifest = subset(whole, args.per_class, draw)
        index = {split: [i for i, s in enumerate(manifest.samples) if s.split == split] for split in ("train", "val")}
        y = {split: np.array([manifest.samples[i].label for i in rows]) for split, rows in index.items()}
        x = {split: features[rows] for split, rows in index.items()}
        for name, rule in RULES.items():
            probe._one_standard_error_choice = rule
            fitted = probe.fit_probe(x["train"], torch.from_numpy(y["train"]), len(whole.class_names), seed=0)
            predicted = (x["val"].float() @ fitted.weight.T + fitted.bias).argmax(1).numpy()
            scores[name].append(float((predicted == y["val"]).mean()))
        probe._one_standard_error_choice = RULES["one_standard_error"]
        cs = [1 / (p * len(y["train"])) for p in probe.PENALTIES]
        folds = min(5, int(np.bincount(y["train"]).min()))
        sk = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=cs, cv=folds, max_iter=3000))
        scores["sklearn_cv"].append(float(sk.fit(x["train"].numpy(), y["train"]).score(x["val"].numpy(), y["val"])))
        print(json.dumps({"draw": draw, **{k: round(v[-1], 4) for k, v in scores.items()}}), flush=True)
    print(json.dumps({"data": Path(args.data).name, "per_class": args.per_class, "draws": args.draws,
                      **{k: round(float(np.mean(v)), 4) for k, v in scores.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()

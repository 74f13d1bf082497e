"""What pretraining buys, measured on the person's own pictures: accuracy against the share of training pictures,
pretrained and from random weights, each point a real run on the stated share (validation always whole).

The pretrained points are heads fitted on the cached pretrained features (seconds each); the from-scratch points
are training runs with `train_share` set, queued as background jobs like any other run.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from tl_core.config import TrainConfig
from tl_core.data import DatasetManifest, keep_training_share
from tl_core.probe import fit_probe

SHARES = (0.1, 0.25, 0.5, 1.0)
SCRATCH_EPOCHS = 10  # at least: random weights learn nothing in the one 'epoch' of a fitted head


def pretrained_points(manifest: DatasetManifest, features, seed: int = 0, shares=SHARES) -> list[dict]:
    """For each share: the fitted head's validation accuracy when trained on that share of the training pictures."""
    val = [i for i, s in enumerate(manifest.samples) if s.split == "val"]
    y_val = np.array([manifest.samples[i].label for i in val])
    points = []
    for share in shares:
        subset = keep_training_share(manifest, share, seed)
        train = [i for i, s in enumerate(subset.samples) if s.split == "train"]
        labels = torch.tensor([subset.samples[i].label for i in train])
        probe = fit_probe(features[train], labels, len(manifest.class_names), seed=seed)
        predicted = (features[val].float() @ probe.weight.T + probe.bias).argmax(1).numpy()
        points.append({"share": share, "num_train": len(train), "accuracy": float((predicted == y_val).mean())})
    return points


def scratch_config(run_config: dict, share: float = 1.0) -> TrainConfig:
    """The run's own settings, from random weights with every block training, on `share` of its pictures: the same
    backbone, data, split, image size and batch, and at least SCRATCH_EPOCHS epochs."""
    names = set(TrainConfig.__dataclass_fields__)
    settings = {k: v for k, v in run_config.items() if k in names and k not in ("resume", "budget")}
    config = TrainConfig(**settings)
    return replace(
        config,
        weights="none",
        freeze="none",
        strategy="manual",
        probe=False,
        feature_cache=False,
        train_share=share,
        augment="auto",  # on, as every block trains: a fair baseline, not one held back
        epochs=max(int(config.epochs), SCRATCH_EPOCHS),
        lr=None,
    )


def is_scratch_twin(run_config: dict, of: dict) -> bool:
    """Whether the run with `run_config` is a from-scratch run of the same backbone, data, split and image size."""
    same = ("data_dir", "backbone", "val_split", "test_split", "seed")
    return (
        run_config.get("weights") == "none"
        and all(run_config.get(k) == of.get(k) for k in same)
        and run_config.get("input", {}).get("img_size") == of.get("input", {}).get("img_size")
    )


def sentence(pretrained: list[dict], scratch: dict[float, float]) -> str | None:
    """'Pretrained with 25% of the pictures (81.0%) beats from scratch with all of them (62.0%).' when measured so."""
    if 1.0 not in scratch:
        return None
    for point in sorted(pretrained, key=lambda p: p["share"]):
        if point["accuracy"] > scratch[1.0]:
            with_share = "all" if point["share"] == 1.0 else f"{point['share']:.0%}"
            return (
                f"Pretrained with {with_share} of the pictures ({point['accuracy']:.1%}) beats from scratch with all "
                f"of them ({scratch[1.0]:.1%})."
            )
    return f"From scratch with all the pictures ({scratch[1.0]:.1%}) is as good as pretrained here."

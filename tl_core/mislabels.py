"""Pictures whose given label looks wrong, found the confident-learning way (Northcutt et al., JAIR 2021).

Every training and validation picture gets class probabilities from a probe that never saw it (k-fold over the
pretrained features: seconds). Each class's threshold is the mean probability the probe gives that class on the
pictures labelled with it; a picture is a suspect when another class clears its own threshold, the likeliest such
class being the suggestion. Suspects come worst first: the lowest probability for the label they were given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tl_core.data import DatasetManifest
from tl_core.probe import out_of_fold_probabilities

SPLITS = ("train", "val")
MOST = 60  # more than a person will look through in one sitting


@dataclass
class Suspect:
    path: str
    relpath: str
    split: str
    label: str  # the class it was given (its folder)
    suggested: str  # the class the other pictures vouch for
    label_probability: float  # out-of-fold probability of the given label
    suggested_probability: float


def find_suspects(manifest: DatasetManifest, features: torch.Tensor, seed: int = 0, most: int = MOST) -> list[Suspect]:
    """The likely mislabelled pictures among train and val (`features` in the manifest's order), worst first."""
    chosen = [i for i, s in enumerate(manifest.samples) if s.split in SPLITS]
    labels = np.array([manifest.samples[i].label for i in chosen])
    num_classes = len(manifest.class_names)
    if len(chosen) < 2 * num_classes or np.bincount(labels, minlength=num_classes).min() < 2:
        return []  # a class with one picture cannot be cross-checked
    probs, _ = out_of_fold_probabilities(features[chosen], torch.from_numpy(labels), num_classes, seed=seed)
    thresholds = np.array([probs[labels == c, c].mean() for c in range(num_classes)])
    suspects = []
    for row, (index, label) in enumerate(zip(chosen, labels, strict=True)):
        above = probs[row] >= thresholds
        above[label] = False
        if not above.any():
            continue
        suggested = int(np.argmax(np.where(above, probs[row], -1)))
        if probs[row, suggested] <= probs[row, label]:
            continue  # the given label is still the likelier one
        sample = manifest.samples[index]
        suspects.append(
            Suspect(
                sample.path,
                sample.relpath,
                sample.split,
                manifest.class_names[label],
                manifest.class_names[suggested],
                float(probs[row, label]),
                float(probs[row, suggested]),
            )
        )
    return sorted(suspects, key=lambda s: s.label_probability)[:most]

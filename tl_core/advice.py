"""The verdict at the top of Evaluate: what the numbers say, in words, and the next step they support.

Every sentence is computed from the run (its validation answers, its settings, its training pictures per class);
each piece of advice names the setting that would act on it, so the page can set it up with one click.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tl_core.metrics import Evaluation
from tl_core.operating_point import threshold_table

WELL = 0.95  # a class found this often needs no advice
FEW_TRAINING = 50  # pictures per class under which more pictures are the surest gain
IMBALANCE = 1.5


@dataclass
class Advice:
    action: str  # "more_pictures", "class_balanced", "fine_tune", "threshold", "mislabels"
    text: str
    settings: dict = field(default_factory=dict)  # what the action changes (for the Train page, or the threshold)


@dataclass
class Verdict:
    headline: str
    findings: list[str]
    advice: list[Advice]


def verdict(evaluation: Evaluation, config: dict, train_counts: dict[str, int], summary: dict | None = None) -> Verdict:
    names, confusion = evaluation.class_names, evaluation.confusion
    right = int(np.trace(confusion))
    headline = f"It labels {right} of {evaluation.num_images} validation pictures right ({evaluation.accuracy:.1%})."
    findings, advice = [], []
    recalls = [(row["recall"], row["class"]) for row in evaluation.per_class if row["recall"] is not None]
    worst_recall, worst = min(recalls) if recalls else (1.0, None)
    for i, name in enumerate(names):
        found, of = int(confusion[i, i]), int(confusion[i].sum())
        if not of:
            findings.append(f"No validation picture of **{name}**: how well it is found is not measured.")
            continue
        missed = confusion[i].copy()
        missed[i] = 0
        if missed.sum():
            taken_for = names[int(missed.argmax())]
            findings.append(
                f"Finds {found} of {of} **{name}** pictures ({found / of:.0%}); "
                f"{int(missed.sum())} missed, most taken for **{taken_for}** ({int(missed.max())})."
            )
        else:
            findings.append(f"Finds all {of} **{name}** pictures.")
    if evaluation.num_images < 50:
        findings.append(
            f"Only {evaluation.num_images} validation pictures: one picture moves accuracy by "
            f"{1 / max(evaluation.num_images, 1):.1%}, so differences of a few points between runs can be chance."
        )
    if worst is None or worst_recall >= WELL:
        return Verdict(headline, findings, advice)

    counts = {name: train_counts.get(name, 0) for name in names}
    biggest = max(counts.values()) if counts else 0
    if counts.get(worst, 0) < FEW_TRAINING or counts.get(worst, 0) * IMBALANCE <= biggest:
        advice.append(
            Advice(
                "more_pictures",
                f"Add pictures of **{worst}**: it has {counts.get(worst, 0)} for training (the largest class "
                f"{biggest}). More examples of the class it misses are the surest gain.",
            )
        )
    if counts.get(worst, 0) * IMBALANCE <= biggest and not config.get("class_balanced"):
        advice.append(
            Advice(
                "class_balanced",
                f"Train with the class-balanced loss, so the {counts.get(worst, 0)} **{worst}** pictures count as "
                f"much as the {biggest} of the largest class.",
                {"class_balanced": True},
            )
        )
    if str(config.get("freeze")) == "all" and not (summary or {}).get("auto"):  # Auto weighed fine-tuning already
        advice.append(
            Advice(
                "fine_tune",
                "Fine-tune the backbone: this model only fitted a new head on the pretrained network. Auto with about "
                "10 minutes fine-tunes its last blocks when that does better on validation.",
                {"strategy": "auto", "budget": "10m"},
            )
        )
    if len(names) == 2 and evaluation.probabilities is not None:
        table = threshold_table(evaluation.probabilities, evaluation.labels, names, worst)
        reach = [row for row in table if row["recall"] > worst_recall]
        if reach:
            best = max(reach, key=lambda row: (min(row["recall"], 0.9), row["threshold"]))
            advice.append(
                Advice(
                    "threshold",
                    f"Lower the line for **{worst}**: at a threshold of {best['threshold']:.2f} it finds "
                    f"{best['found']} of {best['of']}, with {best['false_alarms']} false alarm(s) (set it under "
                    "Where to draw the line, below).",
                    {"positive": worst, "threshold": best["threshold"]},
                )
            )
    return Verdict(headline, findings, advice)

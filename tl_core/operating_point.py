"""Where to draw the line: the rule that turns a run's probabilities into answers, chosen on validation, saved in the
run (operating_point.json) and carried into the export. The rule's form is in `tl_core.decision`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from tl_core.decision import decide
from tl_core.runs import read_json, write_json_atomic

FILE = "operating_point.json"


def read_rule(run_dir: str | Path) -> dict | None:
    """The run's saved rule, or None (the likeliest class, always sure)."""
    rule = read_json(Path(run_dir) / FILE, default=None)
    return rule or None


def save_rule(run_dir: str | Path, rule: dict | None) -> None:
    """Save (or, with None, clear) the run's rule; Predict, the CLI and later exports follow it."""
    path = Path(run_dir) / FILE
    if rule is None:
        path.unlink(missing_ok=True)
    else:
        write_json_atomic(path, rule)


def answers(probs: np.ndarray, class_names: list[str], rule: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(answer index per picture, whether it is sure) under `rule`."""
    decided = decide(probs, class_names, rule)
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[d["label"]] for d in decided], dtype=int), np.array([d["sure"] for d in decided])


def confusion_at(probs: np.ndarray, labels: np.ndarray, class_names: list[str], rule: dict | None) -> np.ndarray:
    """The confusion matrix (rows: true class) of the sure answers under `rule`."""
    predicted, sure = answers(probs, class_names, rule)
    return confusion_matrix(labels[sure], predicted[sure], labels=list(range(len(class_names))))


def threshold_table(probs: np.ndarray, labels: np.ndarray, class_names: list[str], positive: str) -> list[dict]:
    """For two classes: at each threshold on the probability of `positive`, how many of its pictures are found
    (recall), how often an alarm is right (precision), and the false alarms; the rows of the precision-recall
    curve, from the lowest threshold to the highest."""
    p = class_names.index(positive)
    is_positive = labels == p
    rows = []
    for threshold in np.round(np.linspace(0.01, 0.99, 99), 2):
        said = probs[:, p] >= threshold
        found = int((said & is_positive).sum())
        rows.append(
            {
                "threshold": float(threshold),
                "found": found,
                "of": int(is_positive.sum()),
                "false_alarms": int((said & ~is_positive).sum()),
                "recall": found / max(int(is_positive.sum()), 1),
                "precision": found / int(said.sum()) if said.any() else 1.0,
            }
        )
    return rows


def not_sure_table(probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """For any number of classes: at each confidence threshold, the share of pictures answered (the rest 'not
    sure') and the accuracy of those answers."""
    confidence, right = probs.max(1), probs.argmax(1) == labels
    rows = []
    for threshold in np.round(np.linspace(0.0, 0.99, 100), 2):
        answered = confidence >= threshold
        rows.append(
            {
                "threshold": float(threshold),
                "answered": float(answered.mean()) if len(labels) else 0.0,
                "accuracy": float(right[answered].mean()) if answered.any() else None,
            }
        )
    return rows

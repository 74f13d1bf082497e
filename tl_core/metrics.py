"""How good a run is, from its folder alone: accuracy, per-class precision/recall/F1, confusion matrix, mistakes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from tl_core.decision import decide
from tl_core.errors import RunNotFoundError
from tl_core.runs import read_json


@dataclass
class Evaluation:
    class_names: list[str]
    accuracy: float
    num_images: int
    per_class: list[dict]  # class, precision, recall, f1, support
    confusion: np.ndarray  # rows: true class, columns: predicted class
    mistakes: list[dict]  # path, true, predicted, confidence; most confident mistakes first
    macro_f1: float
    labels: np.ndarray  # the true class of each validation picture
    probabilities: np.ndarray | None  # N x classes, calibrated; None for runs trained before Headstart saved them


def read_predictions(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "predictions.csv"
    if not path.exists():
        raise RunNotFoundError(
            f"Run '{Path(run_dir).name}' has no predictions.csv: it ended before its first validation."
        )
    with open(path, newline="", encoding="utf-8") as f:
        return [{**row, "confidence": float(row["confidence"])} for row in csv.DictReader(f)]


def evaluate_run(run_dir: str | Path, rule: dict | None = None) -> Evaluation:
    """The run's validation results; with a two-class `rule` (an operating point), its answers under that rule."""
    class_names = read_json(Path(run_dir) / "labels.json", default=None)
    if not class_names:
        raise RunNotFoundError(f"Run '{Path(run_dir).name}' has no labels.json.")
    rows = read_predictions(run_dir)
    probabilities = _probabilities(rows, class_names)
    index = {name: i for i, name in enumerate(class_names)}
    y_true = np.array([index[r["true"]] for r in rows], dtype=int)
    if rule and rule.get("kind") == "binary" and probabilities is not None:
        rows = [
            {**r, "predicted": answer["label"], "confidence": answer["confidence"]}
            for r, answer in zip(rows, decide(probabilities, class_names, rule), strict=True)
        ]
    y_pred = np.array([index[r["predicted"]] for r in rows], dtype=int)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    # A class with no validation picture has no recall and no F1: shown empty, and left out of the macro average.
    per_class = [
        {"class": name, "precision": float(p) if s else None, "recall": float(r) if s else None,
         "f1": float(f) if s else None, "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    ]  # fmt: skip
    present = support > 0
    mistakes = sorted((r for r in rows if r["true"] != r["predicted"]), key=lambda r: -r["confidence"])
    return Evaluation(
        class_names=class_names,
        accuracy=float((y_true == y_pred).mean()) if len(rows) else 0.0,
        num_images=len(rows),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        mistakes=mistakes,
        macro_f1=float(np.mean(f1[present])) if present.any() else 0.0,
        labels=y_true,
        probabilities=probabilities,
    )


def _probabilities(rows: list[dict], class_names: list[str]) -> np.ndarray | None:
    columns = [f"p({name})" for name in class_names]
    if not rows or any(c not in rows[0] for c in columns):
        return None
    return np.array([[float(r[c]) for c in columns] for r in rows])

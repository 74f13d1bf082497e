"""Evaluation from a run folder: a class with no validation picture is not scored as a failure."""

from __future__ import annotations

import json

import pytest

from tl_core.metrics import evaluate_run


def test_macro_f1_leaves_out_classes_with_no_validation_picture(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b", "c"]))
    rows = ["path,true,predicted,confidence", "1.png,a,a,0.9", "2.png,a,b,0.6", "3.png,b,b,0.8", "4.png,b,b,0.7"]
    (tmp_path / "predictions.csv").write_text("\n".join(rows) + "\n")
    evaluation = evaluate_run(tmp_path)
    assert evaluation.accuracy == 0.75
    by_class = {row["class"]: row for row in evaluation.per_class}
    assert by_class["c"] == {"class": "c", "precision": None, "recall": None, "f1": None, "support": 0}
    assert by_class["a"]["recall"] == 0.5 and by_class["b"]["precision"] == pytest.approx(2 / 3)
    assert evaluation.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)  # a: 2/3, b: 0.8; c is not averaged in
    assert evaluation.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]

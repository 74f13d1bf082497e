"""From a model's outputs to the answer a person reads: calibrated probabilities, then the run's operating point.

Plain numpy and nothing of Headstart's: the exported predict scripts carry a copy of these functions
(`inspect.getsource`), so the app, the CLI and the bundles turn outputs into answers the same way.

A rule (saved in a run as operating_point.json, in a bundle inside preprocessing.json) is one of:
- None: the likeliest class, always given as sure;
- {"kind": "binary", "positive": NAME, "threshold": t}: two classes; NAME when its probability reaches t, else the
  other class (a low t finds more of NAME at the price of more false alarms);
- {"kind": "not_sure_below", "threshold": t}: the likeliest class, marked not sure when its probability is under t.
"""

from __future__ import annotations

import numpy as np

NOT_SURE = "not sure"


def calibrated_probabilities(log_probs, temperature: float = 1.0) -> np.ndarray:
    """N x C log-probabilities (the model's, or averaged with the mirror image's) -> probabilities after temperature
    scaling: softmax(log_probs / temperature). The order of the classes never changes, only how sure they look."""
    z = np.asarray(log_probs, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def decide(probs, class_names: list[str], rule: dict | None = None) -> list[dict]:
    """Each row of N x C probabilities -> {"label", "confidence", "sure"}: the answer under `rule` (see the module),
    the probability of that answer, and whether it clears the rule's threshold."""
    probs = np.asarray(probs, dtype=np.float64)
    kind = (rule or {}).get("kind")
    answers = []
    for row in probs:
        index = int(row.argmax())
        sure = True
        if kind == "binary":
            positive = class_names.index(rule["positive"])
            index = positive if row[positive] >= rule["threshold"] else 1 - positive
        elif kind == "not_sure_below":
            sure = bool(row[index] >= rule["threshold"])
        answers.append({"label": class_names[index], "confidence": float(row[index]), "sure": sure})
    return answers

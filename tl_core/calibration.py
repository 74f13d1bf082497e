"""How sure the model should be: temperature scaling fitted on validation (Guo et al., ICML 2017), and how far its
confidence is from its accuracy before and after (expected calibration error, reliability bins).

One number, the temperature T, divides the log-probabilities: it changes how sure each answer looks, never which
answer is given, so accuracy is untouched. Fitted by minimising the validation negative log-likelihood.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from tl_core.decision import calibrated_probabilities

BINS = 10
# Few validation pictures say little about how sure the model should be; under this many the temperature stays 1.
MIN_PICTURES = 10
LOWEST, HIGHEST = 0.05, 20.0


@dataclass
class Calibration:
    temperature: float
    num_images: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    bins_before: list[dict]
    bins_after: list[dict]

    def summary(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def sentence(self) -> str:
        if self.num_images < MIN_PICTURES:
            return "Confidences are the model's own: too few validation pictures to calibrate them."
        used = [b for b in self.bins_before if b["count"]]
        sure = sum(b["count"] * b["confidence"] for b in used) / self.num_images
        right = sum(b["count"] * b["accuracy"] for b in used) / self.num_images
        how = (
            f"over-confident (sure {sure:.0%} on average, right {right:.0%})"
            if sure > right
            else (f"under-confident (sure {sure:.0%} on average, right {right:.0%})")
        )
        if self.temperature == 1.0:
            return (
                f"The model was {how}, its confidences {self.ece_before:.1%} off its accuracy on average; no "
                "temperature did better on the validation pictures, so they stay as they are."
            )
        return (
            f"The model was {how}: its confidences were {self.ece_before:.1%} off its accuracy on average, "
            f"{self.ece_after:.1%} after calibration (temperature {self.temperature:.2f})."
        )


def negative_log_likelihood(log_probs: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    probs = calibrated_probabilities(log_probs, temperature)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Pictures grouped by the confidence of their answer: per group, how sure the model was and how often right."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return [
        {
            "low": b / bins,
            "high": (b + 1) / bins,
            "count": int((which == b).sum()),
            "confidence": float(confidence[which == b].mean()) if (which == b).any() else None,
            "accuracy": float(correct[which == b].mean()) if (which == b).any() else None,
        }
        for b in range(bins)
    ]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """The mean gap between confidence and accuracy, each group weighted by its share of the pictures."""
    groups = reliability_bins(probs, labels, bins)
    return float(sum(g["count"] * abs(g["confidence"] - g["accuracy"]) for g in groups if g["count"]) / len(labels))


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature with the lowest validation negative log-likelihood (1.0 for too few pictures)."""
    if len(labels) < MIN_PICTURES:
        return 1.0
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(log_probs, labels, float(np.exp(log_t))),
        bounds=(np.log(LOWEST), np.log(HIGHEST)),
        method="bounded",
    )
    temperature = float(np.exp(found.x))
    better = negative_log_likelihood(log_probs, labels, temperature) < negative_log_likelihood(log_probs, labels)
    return round(temperature, 4) if better else 1.0


def calibrate(log_probs: np.ndarray, labels: np.ndarray) -> Calibration:
    log_probs, labels = np.asarray(log_probs, dtype=np.float64), np.asarray(labels, dtype=int)
    temperature = fit_temperature(log_probs, labels)
    before, after = calibrated_probabilities(log_probs), calibrated_probabilities(log_probs, temperature)
    return Calibration(
        temperature=temperature,
        num_images=len(labels),
        nll_before=negative_log_likelihood(log_probs, labels),
        nll_after=negative_log_likelihood(log_probs, labels, temperature),
        ece_before=expected_calibration_error(before, labels),
        ece_after=expected_calibration_error(after, labels),
        bins_before=reliability_bins(before, labels),
        bins_after=reliability_bins(after, labels),
    )

"""The linear probe: a new head fitted to its optimum on frozen backbone features, its strength chosen by k-fold CV.

Multinomial logistic regression with an L2 penalty, fitted by full-batch L-BFGS on standardised features (so one
penalty scale suits every backbone), for each penalty of a grid from strong to weak (each fit starts from the
previous one's answer, so the path costs little more than one fit). The strongest penalty whose cross-validated
loss on the training pictures is within one standard error of the lowest wins; the head is then refitted on all
of them. The result is folded back into the raw feature space: `features @ weight.T + bias` are the logits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Penalties on the mean cross-entropy, strong to weak (sklearn's C = 1 / (penalty * n_train)). A few dozen pictures
# per class against ~1,000 features want the strong end (measured on solar-cell scans: docs/BENCHMARKS.md).
PENALTIES = (100.0, 30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
MAX_FOLDS = 5
LARGE = 1000  # training pictures from which 3 folds are enough (and 5 would cost seconds)
CV_ITERATIONS = 40  # L-BFGS iterations per fit inside cross-validation (warm-started along the path)
FINAL_ITERATIONS = 200


@dataclass
class Probe:
    weight: torch.Tensor  # (classes, features): logits = features @ weight.T + bias
    bias: torch.Tensor  # (classes,)
    penalty: float  # the chosen one
    tried: list[dict]  # {"penalty", "cv_accuracy", "cv_loss"} for each penalty of the grid
    folds: int  # 0 when there were too few pictures per class to cross-validate
    seconds: float

    @property
    def cv_accuracy(self) -> float | None:
        return next((t["cv_accuracy"] for t in self.tried if t["penalty"] == self.penalty), None)

    def summary(self) -> dict:
        return {
            "penalty": self.penalty,
            "folds": self.folds,
            "cv_accuracy": self.cv_accuracy,
            "tried": self.tried,
            "seconds": round(self.seconds, 2),
        }

    def sentence(self) -> str:
        if not self.folds:
            return (
                f"The head was fitted to its optimum (L-BFGS) with a standard penalty ({self.penalty:g}): too few "
                "pictures per class to cross-validate a choice."
            )
        return (
            f"The head was fitted to its optimum: {len(self.tried)} regularisation strengths were tried by "
            f"{self.folds}-fold cross-validation on the training pictures ({self.seconds:.1f} s); the best "
            f"(penalty {self.penalty:g}) labelled {self.cv_accuracy:.1%} of held-out training pictures right."
        )


def fit_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    class_weights: torch.Tensor | None = None,
    penalties: tuple[float, ...] = PENALTIES,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> Probe:
    """The best L2-penalised logistic regression head for these features, chosen by stratified k-fold CV."""
    started = time.perf_counter()
    x = features.float()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    y = labels.long()
    folds = _folds(y.numpy(), seed, 3 if len(y) >= LARGE else MAX_FOLDS)
    tried = []
    if folds:
        correct = {p: 0 for p in penalties}
        fold_losses: dict[float, list[float]] = {p: [] for p in penalties}  # mean held-out loss of each fold
        for fold, held_out in enumerate(folds):
            if on_progress:
                on_progress(fold, len(folds) + 1)
            train = np.setdiff1d(np.arange(len(y)), held_out)
            warm = None
            for penalty in penalties:
                warm = _fit(x[train], y[train], num_classes, penalty, class_weights, warm, CV_ITERATIONS)
                logits = x[held_out] @ warm[0].T + warm[1]
                correct[penalty] += int((logits.argmax(1) == y[held_out]).sum())
                fold_losses[penalty].append(float(F.cross_entropy(logits, y[held_out])))
        tried = [
            {
                "penalty": p,
                "cv_accuracy": round(correct[p] / len(y), 4),
                "cv_loss": round(float(np.mean(fold_losses[p])), 4),
            }
            for p in penalties
        ]
        best = _one_standard_error_choice(tried, fold_losses)
    else:
        best = 1e-3
    if on_progress:
        on_progress(len(folds), len(folds) + 1)
    warm = None
    for penalty in penalties[: penalties.index(best)] if best in penalties else []:  # a warm start for the last
        warm = _fit(x, y, num_classes, penalty, class_weights, warm, CV_ITERATIONS)
    weight, bias = _fit(x, y, num_classes, best, class_weights, warm, FINAL_ITERATIONS)
    raw_weight = weight / std  # logits = ((f - mean) / std) @ W.T + b = f @ (W / std).T + (b - (W / std) @ mean)
    raw_bias = bias - raw_weight @ mean
    return Probe(raw_weight.float(), raw_bias.float(), best, tried, len(folds), time.perf_counter() - started)


def _fit(x, y, num_classes, penalty, class_weights, warm, iterations):
    """(weight, bias) minimising mean cross-entropy + penalty / 2 * |weight|^2, by L-BFGS from `warm` (or zero)."""
    weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype) if warm is None else warm[0].clone()
    bias = torch.zeros(num_classes, dtype=x.dtype) if warm is None else warm[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    cw = None if class_weights is None else class_weights.to(x.dtype)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=iterations, tolerance_grad=1e-5, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y, weight=cw) + 0.5 * penalty * (weight * weight).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def _folds(labels: np.ndarray, seed: int, most: int) -> list[np.ndarray]:
    """Stratified folds (up to `most`; as many as the smallest class allows), or none when a class has one picture."""
    counts = np.bincount(labels)
    k = min(most, int(counts[counts > 0].min()))
    if k < 2:
        return []
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=int)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        assignment[rng.permutation(members)] = np.arange(len(members)) % k
    return [np.flatnonzero(assignment == fold) for fold in range(k)]


def _one_standard_error_choice(tried: list[dict], fold_losses: dict[float, list[float]]) -> float:
    """The strongest penalty whose held-out loss is within one standard error of the lowest (the '1-SE rule').

    Held-out loss, not accuracy: with a few dozen pictures accuracy moves in steps of one picture and picked a
    different strength with every shuffle of the folds; the loss (a proper score) is steadier. Of the strengths the
    folds cannot tell apart from the best, the strongest generalises best to new pictures (measured on solar-cell
    scans, docs/BENCHMARKS.md).
    """
    lowest = min(tried, key=lambda t: t["cv_loss"])
    losses = fold_losses[lowest["penalty"]]
    standard_error = float(np.std(losses, ddof=1) / np.sqrt(len(losses))) if len(losses) > 1 else 0.0
    return next(t["penalty"] for t in tried if t["cv_loss"] <= lowest["cv_loss"] + standard_error)  # strong first


def out_of_fold_probabilities(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, seed: int = 0, folds: int = MAX_FOLDS
) -> tuple[np.ndarray, float]:
    """Each picture's class probabilities from a probe that never saw it (k-fold), and the penalty used.

    The penalty is the one the probe chooses on all the pictures; each fold's head is then fitted without that fold.
    A picture the other pictures of its class do not vouch for gets a low probability for its own label."""
    penalty = fit_probe(features, labels, num_classes, seed=seed).penalty
    x = features.float()
    x = (x - x.mean(0)) / x.std(0).clamp(min=1e-6)
    y = labels.long()
    probs = np.full((len(y), num_classes), 1.0 / num_classes)
    for held_out in _folds(y.numpy(), seed, folds):
        train = np.setdiff1d(np.arange(len(y)), held_out)
        weight, bias = _fit(x[train], y[train], num_classes, penalty, None, None, FINAL_ITERATIONS)
        probs[held_out] = (x[held_out] @ weight.T + bias).softmax(1).numpy()
    return probs, penalty

"""The linear probe reaches the optimum of the problem it solves, chooses its strength fairly, and is quick."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from tl_core.probe import _folds, fit_probe


def _features(n=300, d=40, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, d)) + rng.normal(size=(classes, d))[y] * 0.6
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_the_fitted_head_is_scikit_learns_optimum_at_the_chosen_strength():
    x, y = _features()
    probe = fit_probe(x, y, 3)
    # The same problem in scikit-learn: standardised features, mean cross-entropy + penalty/2 |W|^2 = C = 1/(pen n).
    scaled = StandardScaler().fit(x.numpy())
    reference = LogisticRegression(C=1 / (probe.penalty * len(y)), tol=1e-10, max_iter=10_000)
    reference.fit(scaled.transform(x.numpy()), y.numpy())
    ours = torch.softmax(x @ probe.weight.T + probe.bias, 1).numpy()
    theirs = reference.predict_proba(scaled.transform(x.numpy()))
    assert np.abs(ours - theirs).max() < 2e-3


def test_the_strongest_strength_within_one_standard_error_of_the_lowest_held_out_loss_wins():
    x, y = _features(n=60, d=300, seed=1)  # far more features than pictures
    probe = fit_probe(x, y, 3)
    losses = {t["penalty"]: t["cv_loss"] for t in probe.tried}
    lowest = min(losses.values())
    assert losses[probe.penalty] >= lowest and len(set(losses.values())) > 3
    stronger = [p for p in losses if p > probe.penalty]
    assert all(losses[p] > losses[probe.penalty] for p in stronger)  # none stronger came as close
    assert probe.penalty >= min(losses, key=losses.get)  # never weaker than the lowest-loss one


def test_one_standard_error_rule():
    from tl_core.probe import _one_standard_error_choice

    tried = [{"penalty": p, "cv_loss": loss} for p, loss in ((10.0, 0.60), (1.0, 0.52), (0.1, 0.50), (0.01, 0.55))]
    spread = {10.0: [0.6, 0.6], 1.0: [0.5, 0.54], 0.1: [0.47, 0.53], 0.01: [0.5, 0.6]}  # SE of the best: 0.03
    assert _one_standard_error_choice(tried, spread) == 1.0  # 0.52 <= 0.50 + 0.03, and 1.0 is stronger than 0.1
    tight = {**spread, 0.1: [0.5, 0.5]}
    assert _one_standard_error_choice(tried, tight) == 0.1


def test_folds_are_stratified_and_too_few_pictures_are_said():
    labels = np.array([0] * 12 + [1] * 3)
    folds = _folds(labels, seed=0, most=5)
    assert len(folds) == 3  # the smallest class has 3 pictures
    assert sorted(np.concatenate(folds).tolist()) == list(range(15))
    assert all((labels[f] == 1).sum() == 1 for f in folds)
    x, y = _features(n=4, d=5, classes=2)
    y = torch.tensor([0, 0, 0, 1])
    probe = fit_probe(x, y, 2)
    assert probe.folds == 0 and "too few pictures per class" in probe.sentence()


def test_class_weights_move_the_boundary_towards_the_big_class():
    x, y = _features(n=400, d=10, classes=2, seed=3)
    keep = torch.cat([torch.nonzero(y == 0).flatten(), torch.nonzero(y == 1).flatten()[:40]])
    x, y = x[keep], y[keep]
    plain = fit_probe(x, y, 2)
    weights = torch.tensor([len(y) / (2 * (y == 0).sum()), len(y) / (2 * (y == 1).sum())]).float()
    balanced = fit_probe(x, y, 2, class_weights=weights)
    said_small = lambda p: int(((x @ p.weight.T + p.bias).argmax(1) == 1).sum())  # noqa: E731
    assert said_small(balanced) > said_small(plain)


@pytest.mark.parametrize("n", [30])
def test_a_tiny_set_is_fitted_without_error(n):
    x, y = _features(n=n, d=8, classes=3)
    probe = fit_probe(x, y, 3)
    assert probe.weight.shape == (3, 8) and torch.isfinite(probe.weight).all()

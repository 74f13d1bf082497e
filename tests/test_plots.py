"""Figures read right: the loss axis has a sensible span, charts keep their titles clear."""

from __future__ import annotations

from tl_core.plots import MIN_LOSS_SPAN, loss_axis, loss_figure


def test_an_early_loss_is_not_zoomed_into_noise():
    low, high = loss_axis([0.6926, 0.6931, 0.6929])["range"]
    assert high - low >= MIN_LOSS_SPAN  # was 0.6926 to 0.6931
    assert low <= 0.6926 and high >= 0.6931


def test_a_falling_loss_keeps_its_whole_range():
    low, high = loss_axis([2.3, 1.2, 0.4, 0.1])["range"]
    assert low <= 0.1 and high >= 2.3 and low >= 0


def test_the_toolbar_runs_down_the_side_not_across_the_title():
    figure = loss_figure([(1, 0.69), (2, 0.68)], [], 2.0, 10)
    assert figure.layout.modebar.orientation == "v"
    assert figure.layout.yaxis.range[1] - figure.layout.yaxis.range[0] >= MIN_LOSS_SPAN


def test_every_chart_has_its_numbers_in_words():
    from tl_core.plots import accuracy_figure, describe

    history = [{"epoch": 1, "train_accuracy": 0.5, "val_accuracy": 0.6}, {"epoch": 2, "train_accuracy": 0.8,
               "val_accuracy": 0.75}]  # fmt: skip
    words = describe(accuracy_figure(history))
    assert words.startswith("Accuracy (higher is better).")
    assert "validation: 2 points from 60 to 75 (lowest 60, highest 75)" in words
    assert describe(loss_figure([], [], 1.0)).endswith("No numbers yet.")

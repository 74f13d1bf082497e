"""Colours a person with low vision can read (WCAG 2.1 contrast: 4.5:1 for text, 3:1 for charts' marks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tl_core import plots

CONFIG = (Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text()
THEME = dict(re.findall(r'^(\w+Color) = "(#[0-9a-fA-F]{6})"', CONFIG, flags=re.M))  # tomllib is 3.11+


def luminance(colour: str) -> float:
    channels = [int(colour.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize(
    ("foreground", "background", "least"),
    [
        (THEME["textColor"], THEME["backgroundColor"], 4.5),  # body text
        (THEME["textColor"], THEME["secondaryBackgroundColor"], 4.5),  # the sidebar, inputs
        ("#ffffff", THEME["primaryColor"], 4.5),  # a primary button's label
        (THEME["primaryColor"], THEME["backgroundColor"], 4.5),  # links, a slider's value
    ],
)
def test_the_themes_text_is_readable(foreground, background, least):
    assert contrast(foreground, background) >= least


@pytest.mark.parametrize("name", ["FROZEN", "TRAINED", "HEAD", "TRAIN_COLOUR", "VAL_COLOUR"])
def test_chart_colours_stand_out_from_the_page(name):
    assert contrast(getattr(plots, name), THEME["backgroundColor"]) >= 3.0


def test_contrast_is_computed_right():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)

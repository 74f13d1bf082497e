"""The one formatting rule, over the values the pages, the CLI and the model card show."""

from __future__ import annotations

import pytest

from tl_core import formatting as fmt


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.5833, "58.3%"), (0.7231, "72.3%"), (1.0, "100.0%"), (0.0, "0.0%"), (0.99949, "99.9%"), (None, "n/a")],
)
def test_shares(value, shown):
    assert fmt.pct(value) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(18.86, "19 s"), (0.42, "0.4 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"), (3720, "1 h 02 min"), (None, "n/a")],
)
def test_durations(seconds, shown):
    assert fmt.duration(seconds) == shown


@pytest.mark.parametrize(
    ("num_bytes", "shown"),
    [(0, "0 B"), (940, "940 B"), (1530, "1.5 KB"), (17_400_000, "17.4 MB"), (2_100_000_000, "2.1 GB"), (None, "n/a")],
)
def test_sizes_never_read_zero_kilobytes(num_bytes, shown):
    assert fmt.size(num_bytes) == shown


def test_counts_parameters_and_speeds():
    assert fmt.count(12345) == "12,345"
    assert fmt.millions(3_370_000) == "3.37 M" and fmt.millions(52_000) == "52,000"
    assert fmt.speed(31.27) == "31 pictures/s" and fmt.speed(2.34) == "2.3 pictures/s"

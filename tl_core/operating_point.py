"""Where to draw the line: the rule that turns a run's probabilities into answers, chosen on validation, saved in the
run (operating_point.json) and carried into the export. The rule's form is in `tl_core.decision`."""

from __future__ import annotations

from pathlib import Path

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

"""The Data page on a folder it has not seen: checked once, then kept (a rerun draws nothing and checks nothing
again); a long list of skipped files is cut to what a page can show. The progress bar itself: tests/test_large.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.ui.conftest import assert_clean, metric


def _folder(root: Path, per_class: int = 10, junk: int = 0) -> Path:
    rng = np.random.default_rng(1)
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    for i in range(junk):
        (root / "cats" / f"note{i}.txt").write_text("not a picture")
    return root


def _state(path: Path) -> dict:
    return {"hs_dataset": {"path": str(path), "origin": "test folder"}}


def test_a_new_folder_is_checked_then_kept(open_page, tmp_path, monkeypatch):
    folder = _folder(tmp_path / "pets", per_class=30)
    at = open_page("pages/data.py", state=_state(folder))
    assert metric(at, "Pictures") == "60"
    assert not at.get("progress")  # gone once the check is done

    scans = []
    monkeypatch.setattr("tl_core.data.scan_dataset", lambda *a, **k: scans.append(a))
    at.run()  # a cached function would replay its progress bar here, into a placeholder of the run before
    assert_clean(at)
    assert metric(at, "Pictures") == "60" and scans == []


def test_a_long_list_of_skipped_files_is_cut(open_page, tmp_path):
    folder = _folder(tmp_path / "messy", per_class=5, junk=1005)
    at = open_page("pages/data.py", state=_state(folder))
    assert metric(at, "Skipped files") == "1,005"
    assert len(at.dataframe[0].value) == 1000
    assert any("The first 1,000 are listed" in c.value for c in at.caption)

"""A browser's choices kept on disk: saved, found again, refused for a forged id, non-JSON values left out."""

from __future__ import annotations

import pytest

from tl_core import browser_state


def test_choices_are_kept_per_browser(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_DATA_DIR", str(tmp_path))
    one, two = "a" * 32, "b" * 32
    browser_state.save(one, {"hs_dataset": {"path": "/x", "origin": "folder 'x'"}, "train_epochs": 7, "bad": object()})
    assert browser_state.load(one) == {"hs_dataset": {"path": "/x", "origin": "folder 'x'"}, "train_epochs": 7}
    assert browser_state.load(two) == {}
    browser_state.save(one, {"train_epochs": 9})
    assert browser_state.load(one) == {"train_epochs": 9}


@pytest.mark.parametrize("forged", ["../../etc/passwd", "A" * 32, "a" * 31, ""])
def test_a_forged_id_is_refused(tmp_path, monkeypatch, forged):
    monkeypatch.setenv("HEADSTART_DATA_DIR", str(tmp_path))
    assert not browser_state.is_valid_id(forged)
    with pytest.raises(ValueError, match="is not a browser id"):
        browser_state.save(forged, {})

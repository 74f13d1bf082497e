"""What a person chose in the web app (data set, backbone, training settings), kept on disk per browser.

A refresh, a second tab or a server restart starts a new Streamlit session with empty state; the app finds the
browser's saved choices here again by the browser's id (a random cookie value), so nothing has to be chosen twice.
Only plain JSON values are kept, in one small file per browser under the data folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tl_core import settings
from tl_core.runs import read_json, write_json_atomic

_VALID_ID = re.compile(r"^[0-9a-f]{32}$")


def is_valid_id(browser_id: str | None) -> bool:
    return isinstance(browser_id, str) and _VALID_ID.match(browser_id) is not None


def _path(browser_id: str) -> Path:
    if not is_valid_id(browser_id):
        raise ValueError(f"'{browser_id}' is not a browser id (32 hexadecimal characters).")
    return settings.data_dir() / "browsers" / f"{browser_id}.json"


def load(browser_id: str) -> dict:
    """The choices saved for this browser ({} when none, or when the file cannot be read)."""
    state = read_json(_path(browser_id), default={})
    return state if isinstance(state, dict) else {}


def save(browser_id: str, state: dict) -> None:
    """Keep `state` (its JSON-serialisable entries) for this browser, replacing what was there."""
    kept = {}
    for key, value in state.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        kept[key] = value
    path = _path(browser_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, kept)

"""Where Headstart keeps things on disk; each place can be moved with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path


def runs_dir() -> Path:
    """Run folders (one per training run)."""
    return Path(os.environ.get("HEADSTART_RUNS_DIR", "runs"))


def cache_dir() -> Path:
    """Decoded images and backbone features, reused across runs."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "headstart"
    return Path(os.environ.get("HEADSTART_CACHE_DIR", default))


def data_dir() -> Path:
    """Data sets uploaded through the app or built from samples."""
    return Path(os.environ.get("HEADSTART_DATA_DIR", "data"))


def server_data_root() -> Path | None:
    """The only folder (and below) whose data sets the web app may open by path; None (the default): the app opens
    no folder by path. On a shared server that choice is its owner's, who turns it on by naming the folder."""
    root = os.environ.get("HEADSTART_SERVER_DATA_ROOT", "").strip()
    return Path(root).expanduser().resolve() if root else None

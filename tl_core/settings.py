"""Where Headstart keeps things on disk; each place can be moved with an environment variable."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path


def runs_dir() -> Path:
    """Run folders (one per training run)."""
    return Path(os.environ.get("HEADSTART_RUNS_DIR", "runs"))


def workspace_runs_dir(name: str | None) -> Path:
    """Where a workspace's runs go: its own folder under the runs folder (the shared runs folder for none).

    A workspace keeps one person's (or one group's) runs apart from another's on a shared server; its name is the
    key, so it separates work, it does not guard it: anyone who types the same name shares that workspace."""
    name = (name or "").strip()
    if not name:
        return runs_dir()
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:32] or "workspace"
    return runs_dir() / "workspaces" / f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


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

"""Pictures that arrive from a browser or a typed path, made safe to keep on disk.

Every upload is written under the data folder, named by its content, so the same folder uploaded twice is stored
once; a browser-given name can never climb out of that folder; a typed server path must lie under the one folder the
server's owner shares.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tl_core import settings

COMPLETE_MARKER = ".headstart-complete"


def safe_relative(name: str) -> Path | None:
    """A browser-given relative name ('folder/cats/1.jpg') made safe to write under a folder; None if nothing is left.

    Drops empty parts, '.', '..', drive letters and anything that could climb out or be absolute.
    """
    parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".", "..")]
    parts = [re.sub(r'[\x00-\x1f:*?"<>|]', "_", p) for p in parts]
    parts = [p for p in parts if p.strip(" .")]
    return Path(*parts) if parts else None


def folder_name(names: Iterable[str]) -> str:
    """The name of the folder the person picked (the first part of most paths), or 'N files'."""
    names = list(names)
    tops = Counter(rel.parts[0] for n in names if (rel := safe_relative(n)) is not None and len(rel.parts) > 2)
    return tops.most_common(1)[0][0] if tops else f"{len(names)} files"


def store_folder(entries: Iterable[tuple[str, bytes | memoryview]]) -> Path:
    """Write (relative name, bytes) pairs once, under data/uploads/<content hash>/; returns that folder.

    The names carry each file's path inside the picked folder; its sub-folders are the classes.
    """
    digest = hashlib.sha1()
    safe = []
    for name, data in sorted(entries, key=lambda e: e[0]):
        rel = safe_relative(name)
        if rel is None:
            continue
        digest.update(rel.as_posix().encode() + b"\0" + hashlib.sha1(data).digest())
        safe.append((rel, data))
    if not safe:
        raise ValueError("The upload held no files. Pick a folder that contains one sub-folder of images per class.")
    dest = settings.data_dir().resolve() / "uploads" / digest.hexdigest()[:16]
    if not (dest / COMPLETE_MARKER).exists():
        for rel, data in safe:
            target = (dest / rel).resolve()
            if target.is_relative_to(dest):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        (dest / COMPLETE_MARKER).touch()
    return dest


def store_file(data: bytes, subfolder: str, suffix: str) -> Path:
    """Write one uploaded file (a zip, a weights file) under data/<subfolder>/<content hash><suffix>, once."""
    dest = settings.data_dir().resolve() / subfolder / f"{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f".{os.getpid()}.{time.monotonic_ns()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    return dest


def resolve_server_path(text: str) -> Path:
    """A folder or zip path typed by the user, only if it lies inside the configured server data root."""
    root = settings.server_data_root()
    if not text.strip():
        raise ValueError(f"Type the path of a folder under {root}.")
    path = Path(text.strip()).expanduser()
    if not path.is_absolute():
        path = root / path
    path = path.resolve()
    if not path.is_relative_to(root):
        raise ValueError(
            f"'{path}' is outside the folder this server shares ({root}). Give a path under it, or ask the person "
            "who runs Headstart to set HEADSTART_SERVER_DATA_ROOT."
        )
    if not path.exists():
        raise ValueError(
            f"There is nothing at '{path}'. Check the spelling; paths are on the server, not your computer."
        )
    return path

"""A new version of a data set with some pictures relabelled or left out; the original folder is never changed.

The new folder has the same layout (class folders, or train/ val/ test/ with class folders inside), its pictures
hard-linked to the originals where the disk allows (no space used) and copied otherwise. `.headstart-version.json`
in it says where it came from and what changed; the scanner ignores hidden files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from tl_core import limits, settings
from tl_core.data import DatasetManifest
from tl_core.errors import DataError

EXCLUDE = None  # the change that leaves a picture out
RECORD = ".headstart-version.json"


def write_version(manifest: DatasetManifest, changes: dict[str, str | None], parent: Path | None = None) -> Path:
    """A copy of `manifest`'s data set with `changes` (relpath -> new class name, or EXCLUDE) applied; its folder.

    Every class keeps a folder, so a class emptied by the changes says so when the new version is scanned."""
    unknown = {c for c in changes.values() if c is not EXCLUDE and c not in manifest.class_names}
    if unknown:
        raise DataError(f"There is no class {', '.join(sorted(unknown))} in this data set: pick one of its classes.")
    missing = set(changes) - {s.relpath for s in manifest.samples}
    if missing:
        raise DataError(
            f"{len(missing)} picture(s) to change are no longer in the data set, e.g. '{min(missing)}'. Look again "
            "at the list of suspects."
        )
    source = Path(manifest.root)
    parent = Path(parent or settings.data_dir() / "versions")
    limits.check_free_space(parent)
    target = _next_free(parent, re.sub(r"-v\d+$", "", source.name))
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(manifest, changes, tmp, source)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written version left behind
        raise
    tmp.rename(target)  # whole or not at all
    return target


def _write(manifest: DatasetManifest, changes: dict[str, str | None], tmp: Path, source: Path) -> None:
    for sample in manifest.samples:
        new_class = changes.get(sample.relpath, manifest.class_names[sample.label])
        if new_class is EXCLUDE:
            continue
        parts = list(Path(sample.relpath).parts)
        at = 1 if manifest.user_split else 0  # train/<class>/... or <class>/...
        parts[at] = new_class
        _link_or_copy(Path(sample.path), _unused(tmp.joinpath(*parts)))
    # A class the changes emptied still shows, and is reported by the scan; inside the data set's own training
    # folder, whatever its case ('Train/'): a second 'train/' beside it would hide it from the scanner.
    train_folder = next((Path(s.relpath).parts[0] for s in manifest.samples if s.split == "train"), "train")
    for name in manifest.class_names:
        (tmp / train_folder / name if manifest.user_split else tmp / name).mkdir(parents=True, exist_ok=True)
    record = {
        "source": str(source),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "relabelled": {k: v for k, v in changes.items() if v is not EXCLUDE},
        "excluded": sorted(k for k, v in changes.items() if v is EXCLUDE),
    }
    (tmp / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")


def version_record(folder: str | Path) -> dict | None:
    """Where a version came from and what changed, or None for an original data set."""
    path = Path(folder) / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _next_free(parent: Path, base: str) -> Path:
    n = 2
    while (parent / f"{base}-v{n}").exists():
        n += 1
    return parent / f"{base}-v{n}"


def _unused(path: Path) -> Path:
    """`path`, or 'name-2.ext' etc. when a relabelled picture meets one of the same name in its new class."""
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another disk, or a file system without hard links
        shutil.copy2(source, target)

"""Pictures that arrive from a browser or a typed path, made safe to keep on disk.

Every upload is written under the data folder, named by its content, so the same folder uploaded twice is stored
once; a browser-given name can never climb out of that folder; a typed server path must lie under the one folder the
server's owner shares.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tl_core import limits, settings

COMPLETE_MARKER = ".headstart-complete"
NOT_SENT_FILE = ".headstart-not-uploaded.json"  # files of a folder upload left out on purpose, with the reason


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
    tops = Counter(rel.parts[0] for n in names if (rel := safe_relative(n)) is not None and len(rel.parts) >= 2)
    return tops.most_common(1)[0][0] if tops else f"{len(names)} files"


class IncompleteUpload(ValueError):
    """Some files of a folder upload did not arrive; the data set is not used until they have."""

    def __init__(self, missing: list[str], total: int):
        self.missing = missing
        shown = ", ".join(f"'{name}'" for name in missing[:5]) + (" ..." if len(missing) > 5 else "")
        super().__init__(
            f"{len(missing)} of {total} files did not arrive ({shown}), so the folder is not used yet. Pick the same "
            "folder again to send only the missing files, or upload the folder as a zip."
        )


@dataclass
class FolderUpload:
    """A folder that a browser sends in batches: staged under data/uploads/<id>/, used only once every file is in.

    The id is made of the announced names, sizes and modification times, so the same folder picked again (after a
    refresh, a lost connection or a server restart) resumes where it stopped and a finished one is not sent twice.
    Each file is written to a temporary name and renamed, so a file on disk with its announced size is complete.
    """

    folder: Path
    names: list[str]  # as the browser gave them: 'animals/cats/1.jpg'
    sizes: list[int]
    wanted: list[bool]  # False: not sent (hidden litter, or too large), reported in `not_sent`
    not_sent: list[tuple[str, str]]  # (name, why)
    arrived: set[int] = field(default_factory=set)  # indices on disk, complete (found at announce, then added)

    @classmethod
    def announce(cls, names: list[str], sizes: list[int], modified: list[float]) -> FolderUpload:
        """The upload of these files (new, or resumed when the same folder was announced before)."""
        if not names:
            raise ValueError("The folder is empty. Pick a folder that contains one sub-folder of pictures per class.")
        if not len(names) == len(sizes) == len(modified):
            raise ValueError("The browser sent an inconsistent file list. Pick the folder again.")
        digest = hashlib.sha1()
        for name, size, mtime in zip(names, sizes, modified, strict=True):
            digest.update(f"{name}\0{size}\0{mtime:.0f}\n".encode())
        folder = settings.data_dir().resolve() / "uploads" / digest.hexdigest()[:16]
        wanted, not_sent = [], []
        for name, size in zip(names, sizes, strict=True):
            why = _why_not_sent(name, size)
            wanted.append(why is None)
            if why not in (None, IGNORED):  # litter is left out silently, as the folder scanner does
                not_sent.append((name, why))
        if not any(wanted):
            raise ValueError(
                "None of the files in that folder can be used. Pick the folder that holds the class folders."
            )
        limits.check_file_count(sum(wanted), "That folder")
        limits.check_free_space(
            folder, sum(int(s) for s, w in zip(sizes, wanted, strict=True) if w), "This upload"
        )  # fmt: skip
        upload = cls(folder, list(names), [int(s) for s in sizes], wanted, not_sent)
        upload.arrived = set(upload._on_disk())
        return upload

    def target(self, index: int) -> Path:
        rel = safe_relative(self.names[index])
        assert rel is not None  # _why_not_sent refused every name that is unsafe
        return self.folder / rel

    @property
    def complete(self) -> bool:
        return (self.folder / COMPLETE_MARKER).exists()

    def needed(self) -> list[int]:
        """Indices of the wanted files that have not arrived yet (all of them on a first try)."""
        return [i for i, want in enumerate(self.wanted) if want and i not in self.arrived]

    def _on_disk(self) -> list[int]:
        """Indices of the wanted files whose complete bytes are on disk (one stat each)."""
        found = []
        for i, want in enumerate(self.wanted):
            try:
                if want and self.target(i).stat().st_size == self.sizes[i]:
                    found.append(i)
            except OSError:
                pass
        return found

    def add(self, index: int, data: bytes) -> None:
        """Store one file's bytes; a wrong size (a file changed while it was sent) is refused with its name."""
        if not (0 <= index < len(self.names)) or not self.wanted[index]:
            raise ValueError("The browser sent a file that was not in the folder it announced. Pick the folder again.")
        if len(data) != self.sizes[index]:
            raise ValueError(
                f"'{self.names[index]}' arrived with {len(data):,} bytes instead of {self.sizes[index]:,}: it changed "
                "while it was sent. Pick the folder again."
            )
        target = self.target(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self.arrived.add(index)

    @property
    def expected(self) -> int:
        return sum(self.wanted)

    def finish(self) -> Path:
        """The folder, once every wanted file is on disk; IncompleteUpload (naming the missing files) before that."""
        self.arrived = set(self._on_disk())  # what is on disk decides, not what this process remembers
        missing = self.needed()
        if missing:
            raise IncompleteUpload([self.names[i] for i in missing], self.expected)
        (self.folder / NOT_SENT_FILE).write_text(json.dumps(self.not_sent))
        (self.folder / COMPLETE_MARKER).touch()
        return self.folder

    @property
    def label(self) -> str:
        return folder_name(self.names)


IGNORED = "hidden or system file"


def not_uploaded(folder: str | Path) -> list[tuple[str, str]]:
    """(name, why) of the files a finished folder upload left out on purpose (none for any other folder)."""
    try:
        return [tuple(item) for item in json.loads((Path(folder) / NOT_SENT_FILE).read_text())]
    except (OSError, ValueError):
        return []


def _why_not_sent(name: str, size: int) -> str | None:
    from tl_core.data import is_ignored

    rel = safe_relative(name)
    if rel is None:
        return "its name cannot be stored"
    if any(is_ignored(part) for part in rel.parts):
        return IGNORED
    return limits.file_too_large(size)


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
    if root is None:
        raise ValueError(
            "This server opens no folder by path. Upload the folder or a zip instead, or ask the person who runs "
            "Headstart to share a folder by setting HEADSTART_SERVER_DATA_ROOT."
        )
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

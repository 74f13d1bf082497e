"""Every limit Headstart enforces, in one place: its value, why it exists, and the variable that changes it.

A shared server's owner sets them in the environment (HEADSTART_MAX_FILE_MB=512, ...). The Data page lists them,
each message that hits one names it, and docs/RELIABILITY.md records what happens at each.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tl_core.errors import HeadstartError

MB, GB = 1024**2, 1024**3


class LimitReached(HeadstartError):
    """An input or the disk is past one of the limits below."""


@dataclass(frozen=True)
class Limits:
    file_bytes: int  # one picture
    pixels: int  # one picture, decoded
    files: int  # one data set (folder, zip or upload)
    zip_bytes: int  # one zip, unpacked
    zip_ratio: int  # one zip member: unpacked size over packed size
    free_bytes: int  # left free on the disk where runs and data sets go

    @classmethod
    def from_env(cls) -> Limits:
        def number(name: str, default: float) -> float:
            """The variable's value if it is a finite number above zero, else the default ('inf' is no number)."""
            try:
                value = float(os.environ.get(name, default))
            except ValueError:
                return default
            return value if math.isfinite(value) and value > 0 else default

        return cls(
            file_bytes=int(number("HEADSTART_MAX_FILE_MB", 256) * MB),
            pixels=int(number("HEADSTART_MAX_MEGAPIXELS", 64) * 1_000_000),
            files=int(number("HEADSTART_MAX_FILES", 200_000)),
            zip_bytes=int(number("HEADSTART_MAX_ZIP_GB", 20) * GB),
            zip_ratio=int(number("HEADSTART_MAX_ZIP_RATIO", 200)),
            free_bytes=int(number("HEADSTART_MIN_FREE_GB", 1) * GB),
        )


def current() -> Limits:
    """The limits now (read from the environment each time: cheap, and a test or an owner can change them)."""
    return Limits.from_env()


ZIP_RATIO_FLOOR = 10 * MB  # members smaller than this unpacked are never refused for their ratio


def table() -> list[dict]:
    """The limits as a person reads them (the Data page shows this table)."""
    now = current()
    return [
        {"limit": "One picture", "value": f"{now.file_bytes // MB} MB", "because": "a bigger file is a video or a "
         "mistake, and reading it would stall the scan", "setting": "HEADSTART_MAX_FILE_MB"},
        {"limit": "Pixels in one picture", "value": f"{now.pixels // 1_000_000} megapixels", "because": "decoding a "
         "bigger one could use all the memory (a 'decompression bomb')", "setting": "HEADSTART_MAX_MEGAPIXELS"},
        {"limit": "Files in one data set", "value": f"{now.files:,}", "because": "keeps a scan and an upload within "
         "minutes and the server's memory", "setting": "HEADSTART_MAX_FILES"},
        {"limit": "One zip, unpacked", "value": f"{now.zip_bytes // GB} GB", "because": "a bigger archive would fill "
         "the disk", "setting": "HEADSTART_MAX_ZIP_GB"},
        {"limit": "Compression of a file in a zip", "value": f"{now.zip_ratio}x", "because": "a file that unpacks "
         "to hundreds of times its size is a 'zip bomb'", "setting": "HEADSTART_MAX_ZIP_RATIO"},
        {"limit": "Disk space kept free", "value": f"{now.free_bytes / GB:g} GB", "because": "a run or an upload "
         "does not start on a nearly full disk, so earlier work is never squeezed", "setting": "HEADSTART_MIN_FREE_GB"},
    ]  # fmt: skip


def check_free_space(folder: str | Path, needed: int = 0, what: str = "This") -> None:
    """Refuse, with a sentence, to start writing `needed` bytes under `folder` when that would leave the disk with
    less than the free space kept."""
    folder = Path(folder)
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is None:
        return
    free = shutil.disk_usage(existing).free
    keep = current().free_bytes
    if free - needed < keep:
        need = f"needs {needed / GB:.2f} GB and " if needed else "cannot start: "
        raise LimitReached(
            f"{what} {need}the disk of '{folder}' has {free / GB:.2f} GB free; Headstart keeps {keep / GB:g} GB "
            "free (HEADSTART_MIN_FREE_GB) so that nothing already there is put at risk. Free some space (old runs "
            "are folders you can delete), or ask the server's owner."
        )


def file_too_large(size: int) -> str | None:
    """Why a file of `size` bytes is not taken as a picture, or None."""
    limit = current().file_bytes
    if size <= limit:
        return None
    return f"too large to be a usable picture ({size / MB:.0f} MB; the limit is {limit // MB} MB)"


def check_file_count(count: int, where: str) -> None:
    limit = current().files
    if count > limit:
        raise LimitReached(
            f"{where} has {count:,} files, more than the {limit:,} Headstart takes in one data set "
            "(HEADSTART_MAX_FILES). Pick fewer pictures per class, or split it into several data sets."
        )

"""From a folder (or zip) of images to a data set manifest: classes, usable files, the split, every problem found.

Layouts understood:
  ROOT/<class>/...image files...                      (Headstart makes the split)
  ROOT/train/<class>/..., ROOT/val/<class>/... [, ROOT/test/<class>/...]   (the user's own split)
A zip of either, or a folder that wraps either in one extra folder, works too.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tl_core import limits, settings
from tl_core.errors import DataError
from tl_core.images import UnusableImage, map_with_progress, open_rgb

IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini", ".DS_Store", ".ipynb_checkpoints", "__pycache__"}
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DEFAULT_VAL_FRACTION = 0.2  # TrainConfig.val_split's default too
MIN_IMAGES_PER_CLASS = 5
IMBALANCE_RATIO = 3.0
UNUSED = "unused"  # a training picture left out on purpose (a run on a share of the training pictures)


@dataclass
class Sample:
    path: str  # absolute path of the file
    relpath: str  # path shown to the user, relative to the data set root
    label: int
    split: str  # "train", "val" or "test"
    digest: str  # sha1 of the file's bytes: finds duplicates and keys the caches


@dataclass
class Problem:
    path: str  # relative to the data set root
    reason: str


@dataclass
class DatasetManifest:
    root: str
    class_names: list[str]
    samples: list[Sample]
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    user_split: bool = False  # True when the folders themselves said train/val

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        counts = Counter(s.label for s in self.samples if split is None or s.split == split)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}

    def fingerprint(self) -> str:
        """Identifies the set of image contents, whatever their order, names or split."""
        digests = sorted({s.digest for s in self.samples})
        return hashlib.sha1("\n".join(digests).encode()).hexdigest()[:16]

    def split_table(self) -> dict:
        """What `split.json` in a run folder holds."""
        return {
            "root": self.root,
            "class_names": self.class_names,
            "files": [{"path": s.relpath, "label": self.class_names[s.label], "split": s.split} for s in self.samples],
            "skipped": [asdict(p) for p in self.skipped],
            "warnings": self.warnings,
        }


def is_ignored(name: str) -> bool:
    """Hidden files and the litter operating systems and notebooks leave behind."""
    return name.startswith(".") or name in IGNORED_NAMES


def scan_dataset(
    source: str | Path,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = 0.0,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> DatasetManifest:
    """Read every file under `source` (a folder or a .zip), keep the usable images and split them.

    Unusable files are skipped and reported with their reason; the rest goes on. Raises DataError only when
    nothing trainable is left (no folder, fewer than two classes with images).
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"There is no folder or zip at '{source}'. Check the path and try again.")
    skipped: list[Problem] = []
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise DataError(
                f"'{source.name}' is neither a folder nor a zip file. Give a folder with one sub-folder per class."
            )
        source, skipped = extract_zip(source, settings.cache_dir() / "unzipped")
    root = _unwrap(source)
    class_dirs_by_split = _class_dirs_by_split(root)
    user_split = len(class_dirs_by_split) > 1  # train/ with val/ and/or test/
    class_names = sorted({d.name for dirs in class_dirs_by_split.values() for d in dirs})
    if len(class_names) == 1:  # often the folder of one class picked itself: its name, never where it is kept
        raise DataError(
            f"Only one class was found, '{class_names[0]}': a model needs at least two classes to tell apart. Pick "
            f"the folder that holds '{class_names[0]}/' and the folders of the other classes (for example 'cats/' "
            "and 'dogs/')."
        )
    if not class_names:
        raise DataError(
            f"The folder '{root.name}' has no sub-folders: it needs one per class (for example 'cats/' and 'dogs/'), "
            "each holding that class's pictures."
        )

    candidates = _candidates(class_dirs_by_split, class_names)
    limits.check_file_count(len(candidates), f"The folder '{root.name}'")
    outside = {c[0] for c in candidates if not c[0].resolve().is_relative_to(root.resolve())}
    skipped += [Problem(_rel(f, root), "refused: a link to a file outside the data set folder") for f in outside]
    candidates = [c for c in candidates if c[0] not in outside]
    for loose in _visible_files(root, recursive=False):
        skipped.append(Problem(_rel(loose, root), "not inside a class folder: put it in the folder of its class"))

    checked = _check_files([c[0] for c in candidates], on_progress)
    samples: list[Sample] = []
    for (path, split, label), (digest, reason) in zip(candidates, checked, strict=True):
        if reason:
            skipped.append(Problem(_rel(path, root), reason))
        else:
            samples.append(Sample(str(path.resolve()), _rel(path, root), label, split, digest))

    warnings: list[str] = []
    samples = _drop_exact_duplicates(samples, class_names, skipped, warnings)
    samples, class_names = _drop_empty_classes(samples, class_names, warnings)
    if not user_split:
        assign_split(samples, val_fraction, test_fraction, seed)
    elif (
        "val" not in class_dirs_by_split
    ):  # train/ and test/ only: validation comes out of train/, test/ stays as given
        assign_split([s for s in samples if s.split == "train"], val_fraction, 0.0, seed)
        warnings.append(f"No val/ folder: {val_fraction:.0%} of each class in train/ is kept aside for validation.")
    _warn_about_counts(samples, class_names, warnings)
    _warn_duplicates_across_splits(samples, warnings)
    return DatasetManifest(str(root), class_names, samples, skipped, warnings, user_split)


def _class_dirs_by_split(root: Path) -> dict[str, list[Path]]:
    """split -> its class folders: the user's own train/ val/ test/ folders when there are any, else all 'train'."""
    split_dirs = {SPLIT_FOLDERS[p.name.lower()]: p for p in _visible_dirs(root) if p.name.lower() in SPLIT_FOLDERS}
    if "train" in split_dirs and len(split_dirs) > 1:
        return {split: _visible_dirs(folder) for split, folder in split_dirs.items()}
    return {"train": _visible_dirs(root)}


def _candidates(class_dirs_by_split: dict[str, list[Path]], class_names: list[str]) -> list[tuple[Path, str, int]]:
    """(file, split, label) for every visible file under a class folder."""
    return [
        (f, split, class_names.index(class_dir.name))
        for split, dirs in class_dirs_by_split.items()
        for class_dir in dirs
        for f in _visible_files(class_dir)
    ]


def assign_split(samples: list[Sample], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Stratified, seeded split in place: each class is cut in the same proportions, the same way every time."""
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"The validation share ({val_fraction}) and test share ({test_fraction}) must each be between 0 and 1 "
            "and leave room for training images."
        )
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.relpath):
        by_class[sample.label].append(sample)
    for label in sorted(by_class):
        members = [by_class[label][i] for i in rng.permutation(len(by_class[label]))]
        n = len(members)
        n_val = max(1, round(n * val_fraction)) if n >= 2 else 0
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n - n_val >= 2 else 0
        for i, sample in enumerate(members):
            sample.split = "val" if i < n_val else "test" if i < n_val + n_test else "train"


def keep_training_share(manifest: DatasetManifest, share: float, seed: int) -> DatasetManifest:
    """The same data set with only `share` of each class's training pictures (at least one each); the others are
    marked 'unused'. Validation and test stay whole, so results at different shares compare. Seeded and nested: the
    pictures of a smaller share are all in a larger one's."""
    if not 0 < share <= 1:
        raise ValueError(f"The share of training pictures must be above 0 and at most 1, not {share}.")
    if share == 1:
        return manifest
    rng = np.random.default_rng(seed)
    kept: set[str] = set()
    for label in range(len(manifest.class_names)):
        members = sorted((s for s in manifest.split("train") if s.label == label), key=lambda s: s.relpath)
        order = rng.permutation(len(members))
        kept.update(members[i].relpath for i in order[: max(1, math.ceil(share * len(members)))])
    samples = [
        replace(s, split=UNUSED) if s.split == "train" and s.relpath not in kept else replace(s)
        for s in manifest.samples
    ]
    return replace(manifest, samples=samples)


def extract_zip(archive: Path, into: Path) -> tuple[Path, list[Problem]]:
    """Unpack a zip under `into`, once per archive content; members that would land outside are refused."""
    digest = _sha1_file(archive)
    dest = (into / digest[:16]).resolve()
    skipped: list[Problem] = []
    done_marker = dest / ".headstart-complete"
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        total, allowed = sum(m.file_size for m in members), limits.current()
        if total > allowed.zip_bytes:
            raise DataError(
                f"'{archive.name}' would unpack to {total / 1024**3:.1f} GB, more than the "
                f"{allowed.zip_bytes / 1024**3:.0f} GB Headstart accepts (HEADSTART_MAX_ZIP_GB). Split it or give "
                "the folder instead."
            )
        limits.check_file_count(sum(not m.is_dir() for m in members), f"'{archive.name}'")
        if not done_marker.exists():
            limits.check_free_space(into, total, f"Unpacking '{archive.name}'")
        for member in members:
            name = member.filename.replace("\\", "/")
            if member.is_dir():
                continue
            target = (dest / name).resolve()
            unsafe = name.startswith("/") or ".." in name.split("/") or ":" in name.split("/")[0]
            if unsafe or not target.is_relative_to(dest):
                skipped.append(Problem(name, "refused: its path would write outside the data set folder"))
                continue
            if any(is_ignored(part) for part in name.split("/")):
                continue
            if stat.S_ISLNK(member.external_attr >> 16):
                skipped.append(Problem(name, "refused: symbolic links inside a zip are not followed"))
                continue
            if member.file_size > limits.ZIP_RATIO_FLOOR and member.file_size > allowed.zip_ratio * max(
                member.compress_size, 1
            ):
                skipped.append(
                    Problem(
                        name,
                        f"refused: it would unpack to {member.file_size / 1024**2:.0f} MB from "
                        f"{member.compress_size / 1024:.0f} KB, more than {allowed.zip_ratio}x (a 'zip bomb')",
                    )
                )
                continue
            if done_marker.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    dest.mkdir(parents=True, exist_ok=True)
    done_marker.touch()
    return dest, skipped


def _check_files(paths: list[Path], on_progress: Callable[[int, int], None] | None) -> list[tuple[str, str | None]]:
    """(sha1 of bytes, reason it is unusable or None) for each file, decoded in parallel (Pillow frees the GIL)."""

    def check(path: Path) -> tuple[str, str | None]:
        try:
            too_large = limits.file_too_large(path.stat().st_size)
            if too_large:
                return "", too_large
            data = path.read_bytes()
        except OSError as exc:
            return "", f"cannot be read ({exc.strerror})"
        digest = hashlib.sha1(data).hexdigest()
        try:
            open_rgb(io.BytesIO(data), draft_size=64)
        except UnusableImage as exc:
            return digest, str(exc)
        return digest, None

    return map_with_progress(check, paths, on_progress, every=25)


def _drop_exact_duplicates(
    samples: list[Sample], class_names: list[str], skipped: list[Problem], warnings: list[str]
) -> list[Sample]:
    """Same bytes twice in one class and split: keep one. Same bytes under two classes: keep both, but say so."""
    kept: list[Sample] = []
    first_seen: dict[tuple[str, int, str], Sample] = {}
    labels_by_digest: dict[str, set[int]] = defaultdict(set)
    paths_by_digest: dict[str, list[str]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.relpath):
        key = (sample.digest, sample.label, sample.split)
        if key in first_seen:
            skipped.append(Problem(sample.relpath, f"exact duplicate of {first_seen[key].relpath}"))
            continue
        first_seen[key] = sample
        labels_by_digest[sample.digest].add(sample.label)
        paths_by_digest[sample.digest].append(sample.relpath)
        kept.append(sample)
    conflicts = [d for d, labels in labels_by_digest.items() if len(labels) > 1]
    if conflicts:
        examples = "; ".join(" = ".join(paths_by_digest[d]) for d in conflicts[:3])
        warnings.append(
            f"{len(conflicts)} picture(s) appear in more than one class ({examples}). The model cannot learn "
            "two answers for one picture: keep each in its right class only."
        )
    return kept


def _drop_empty_classes(
    samples: list[Sample], class_names: list[str], warnings: list[str]
) -> tuple[list[Sample], list[str]]:
    counts = Counter(s.label for s in samples)
    empty = [name for i, name in enumerate(class_names) if counts[i] == 0]
    if empty:
        warnings.append(f"Left out class(es) with no usable image: {', '.join(empty)}.")
    kept_names = [name for i, name in enumerate(class_names) if counts[i] > 0]
    if len(kept_names) < 2:
        raise DataError(
            f"Only {len(kept_names)} class(es) have usable images ({', '.join(kept_names) or 'none'}); Headstart needs "
            "at least two. See the list of skipped files for why images were not usable."
        )
    new_label = {class_names.index(name): i for i, name in enumerate(kept_names)}
    for sample in samples:
        sample.label = new_label[sample.label]
    return samples, kept_names


def _warn_about_counts(samples: list[Sample], class_names: list[str], warnings: list[str]) -> None:
    counts = Counter(s.label for s in samples)
    few = [f"{class_names[i]} ({counts[i]})" for i in range(len(class_names)) if counts[i] < MIN_IMAGES_PER_CLASS]
    if few:
        warnings.append(
            f"Very few images in: {', '.join(few)}. Aim for at least {MIN_IMAGES_PER_CLASS} per class (20 or more "
            "gives much steadier results)."
        )
    largest, smallest = max(counts.values()), min(counts.values())
    if smallest and largest / smallest > IMBALANCE_RATIO:
        big = class_names[max(counts, key=counts.get)]
        small = class_names[min(counts, key=counts.get)]
        warnings.append(
            f"Strong imbalance: '{big}' has {largest} images but '{small}' only {smallest}. Turn on class-balanced "
            "loss, or add images to the small classes."
        )
    no_train = [
        name for i, name in enumerate(class_names) if not any(s.label == i and s.split == "train" for s in samples)
    ]
    if no_train:
        warnings.append(
            f"No training image for: {', '.join(no_train)}; the model cannot learn it. Add pictures to train/."
        )
    if any(s.split == "val" for s in samples):
        no_val = [
            class_names[i]
            for i in range(len(class_names))
            if not any(s.label == i and s.split == "val" for s in samples)
        ]
        if no_val:
            warnings.append(f"No validation image for: {', '.join(no_val)}; its accuracy cannot be measured.")


def _warn_duplicates_across_splits(samples: list[Sample], warnings: list[str]) -> None:
    splits_by_digest: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        splits_by_digest[sample.digest].add(sample.split)
    straddling = sum(1 for splits in splits_by_digest.values() if len(splits) > 1)
    if straddling:
        warnings.append(
            f"{straddling} picture(s) are both in training and in validation/test, which makes the measured "
            "accuracy look better than it is."
        )


def _unwrap(folder: Path) -> Path:
    """Step into a lone wrapping folder ('my_photos/cats', 'my_photos/dogs' inside a zip)."""
    while True:
        dirs = _visible_dirs(folder)
        if len(dirs) == 1 and not _visible_files(folder, recursive=False) and _visible_dirs(dirs[0]):
            folder = dirs[0]
        else:
            return folder


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_ignored(p.name))


def _visible_files(folder: Path, recursive: bool = True) -> list[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and not is_ignored(p.name))
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        found += [Path(dirpath) / f for f in sorted(filenames) if not is_ignored(f)]
    return found


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

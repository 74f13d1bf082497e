"""Scanning folders and zips: what is used, what is skipped and why, and a split that is stratified and seeded."""

from __future__ import annotations

import zipfile
from collections import Counter

import pytest

from tests.conftest import write_image
from tl_core.data import scan_dataset
from tl_core.errors import DataError


def _make_classes(root, counts: dict[str, int]):
    for name, n in counts.items():
        for i in range(n):
            write_image(root / name / f"{name}_{i:03d}.png", color=(20 * i % 255, 100, 50))
    return root


def test_bad_files_are_skipped_with_reasons_and_litter_is_ignored(tmp_path):
    root = _make_classes(tmp_path / "ds", {"cats": 6, "dogs": 6})
    (root / "cats" / "readme.txt").write_text("hello")
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    write_image(root / "dogs" / "tiny.png", size=(4, 4))
    (root / ".DS_Store").write_bytes(b"\0\0")
    (root / "cats" / "Thumbs.db").write_bytes(b"\0")
    (root / "cats" / ".hidden.png").write_bytes(b"\0")
    (root / "__MACOSX").mkdir()
    write_image(root / "__MACOSX" / "cats" / "._x.png")
    (root / "cats" / ".ipynb_checkpoints").mkdir()
    write_image(root / "cats" / ".ipynb_checkpoints" / "c.png")
    write_image(root / "loose.png")

    manifest = scan_dataset(root, seed=1)

    assert manifest.class_names == ["cats", "dogs"]
    assert manifest.class_counts() == {"cats": 6, "dogs": 6}
    reasons = {p.path: p.reason for p in manifest.skipped}
    assert set(reasons) == {"cats/readme.txt", "dogs/broken.jpg", "dogs/tiny.png", "loose.png"}
    assert "not an image" in reasons["cats/readme.txt"]
    assert "corrupt" in reasons["dogs/broken.jpg"] or "not an image" in reasons["dogs/broken.jpg"]
    assert "too small" in reasons["dogs/tiny.png"]
    assert "class folder" in reasons["loose.png"]


def test_split_is_stratified_and_the_same_for_the_same_seed(tmp_path):
    root = _make_classes(tmp_path / "ds", {"a": 30, "b": 10, "c": 20})
    first = scan_dataset(root, val_fraction=0.2, test_fraction=0.1, seed=7)
    again = scan_dataset(root, val_fraction=0.2, test_fraction=0.1, seed=7)
    other = scan_dataset(root, val_fraction=0.2, test_fraction=0.1, seed=8)

    assert first.class_counts("val") == {"a": 6, "b": 2, "c": 4}
    assert first.class_counts("test") == {"a": 3, "b": 1, "c": 2}
    assert first.class_counts("train") == {"a": 21, "b": 7, "c": 14}
    split_of = lambda m: {s.relpath: s.split for s in m.samples}  # noqa: E731
    assert split_of(first) == split_of(again)
    assert split_of(first) != split_of(other)


def test_user_split_folders_are_kept(tmp_path):
    _make_classes(tmp_path / "ds" / "train", {"x": 5, "y": 5})
    _make_classes(tmp_path / "ds" / "val", {"x": 2, "y": 3})
    manifest = scan_dataset(tmp_path / "ds")
    assert manifest.user_split
    assert manifest.class_counts("train") == {"x": 5, "y": 5}
    assert manifest.class_counts("val") == {"x": 2, "y": 3}


def test_duplicates_are_dropped_within_a_class_and_reported_across_classes(tmp_path):
    root = _make_classes(tmp_path / "ds", {"a": 6, "b": 6})
    (root / "a" / "copy.png").write_bytes((root / "a" / "a_000.png").read_bytes())
    (root / "b" / "stray.png").write_bytes((root / "a" / "a_001.png").read_bytes())
    manifest = scan_dataset(root)
    reasons = {p.path: p.reason for p in manifest.skipped}
    assert "duplicate of a/a_000.png" in reasons["a/copy.png"]
    assert manifest.class_counts() == {"a": 6, "b": 7}
    assert any("more than one class" in w and "b/stray.png" in w for w in manifest.warnings)


def test_warnings_for_few_images_and_imbalance(tmp_path):
    root = _make_classes(tmp_path / "ds", {"big": 40, "small": 3})
    manifest = scan_dataset(root)
    text = " ".join(manifest.warnings)
    assert "Very few images in: small (3)" in text
    assert "Strong imbalance" in text and "'big' has 40" in text


def test_a_class_with_no_usable_image_is_left_out(tmp_path):
    root = _make_classes(tmp_path / "ds", {"a": 5, "b": 5})
    (root / "empty").mkdir()
    (root / "empty" / "x.txt").write_text("no image here")
    manifest = scan_dataset(root)
    assert manifest.class_names == ["a", "b"]
    assert any("empty" in w for w in manifest.warnings)


def test_clear_errors_when_nothing_can_be_trained(tmp_path):
    with pytest.raises(DataError, match="no folder or zip"):
        scan_dataset(tmp_path / "missing")
    _make_classes(tmp_path / "one", {"only": 5})
    with pytest.raises(DataError, match="Only one class was found, 'only'") as error:
        scan_dataset(tmp_path / "one")
    assert "one" not in str(error.value).replace("Only one", "")  # neither the folder's server name nor its path
    assert "Pick the folder that holds 'only/' and the folders of the other classes" in str(error.value)
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="The folder 'flat' has no sub-folders"):
        scan_dataset(tmp_path / "flat")


def test_an_empty_file_is_called_empty(tmp_path):
    from tl_core.images import UnusableImage, open_rgb

    (tmp_path / "cat.jpg").write_bytes(b"")
    with pytest.raises(UnusableImage, match=r"the file is empty \(0 bytes\)"):
        open_rgb(tmp_path / "cat.jpg")
    (tmp_path / "dog.jpg").write_bytes(b"not a picture")
    with pytest.raises(UnusableImage, match="not an image file"):
        open_rgb(tmp_path / "dog.jpg")


def test_a_class_folder_picked_by_itself_is_named_by_its_name():
    from tl_core.uploads import folder_name

    assert folder_name([f"cats/{i}.jpg" for i in range(20)]) == "cats"  # was '20 files'
    assert folder_name(["animals/cats/1.jpg", "animals/dogs/2.jpg"]) == "animals"


def test_zip_with_wrapper_folder_and_escaping_paths(tmp_path):
    src = _make_classes(tmp_path / "src", {"red": 5, "blue": 5})
    archive = tmp_path / "photos.zip"
    outside = tmp_path / "evil.png"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*.png")):
            zf.write(f, f"my photos/{f.relative_to(src)}")
        zf.writestr("../evil.png", (src / "red" / "red_000.png").read_bytes())
        zf.writestr("my photos/red/../../../evil.png", b"x")
        zf.writestr("/abs/evil.png", b"x")
        zf.writestr("__MACOSX/my photos/._red", b"x")

    manifest = scan_dataset(archive)

    assert not outside.exists()
    assert not (tmp_path.parent / "evil.png").exists()
    assert manifest.class_names == ["blue", "red"]
    assert manifest.class_counts() == {"blue": 5, "red": 5}
    refused = [p for p in manifest.skipped if "outside" in p.reason]
    assert len(refused) == 3
    assert Counter(s.split for s in manifest.samples)["val"] == 2


def test_an_oversized_file_is_skipped_without_reading_it(tmp_path, monkeypatch):
    from pathlib import Path

    root = _make_classes(tmp_path / "ds", {"a": 5, "b": 5})
    with open(root / "a" / "movie.jpg", "wb") as f:
        f.truncate(257 * 1024**2)  # sparse: 257 MB on paper, nothing on disk
    read = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or read_bytes(self))
    manifest = scan_dataset(root)
    reasons = {p.path: p.reason for p in manifest.skipped}
    assert reasons == {"a/movie.jpg": "too large to be a usable picture (257 MB; the limit is 256 MB)"}
    assert "movie.jpg" not in read and len(read) == 10  # every other file was read, that one never


def test_train_and_test_folders_without_val(tmp_path):
    _make_classes(tmp_path / "ds" / "train", {"x": 10, "y": 10})
    _make_classes(tmp_path / "ds" / "test", {"x": 3, "y": 3})
    manifest = scan_dataset(tmp_path / "ds", val_fraction=0.2, seed=0)
    assert manifest.class_names == ["x", "y"]  # not "train" and "test"
    assert manifest.class_counts("val") == {"x": 2, "y": 2}  # taken out of train/
    assert manifest.class_counts("train") == {"x": 8, "y": 8}
    assert manifest.class_counts("test") == {"x": 3, "y": 3}  # as given
    assert any("No val/ folder" in w for w in manifest.warnings)


def test_a_class_only_in_val_is_reported(tmp_path):
    _make_classes(tmp_path / "ds" / "train", {"x": 5, "y": 5})
    _make_classes(tmp_path / "ds" / "val", {"x": 2, "y": 2, "z": 2})
    manifest = scan_dataset(tmp_path / "ds")
    assert any("No training image for: z" in w for w in manifest.warnings)

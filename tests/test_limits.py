"""The limits, set in one place (tl_core.limits): each one hit gives its sentence and loses nothing else."""

from __future__ import annotations

import zipfile

import pytest

from tests.conftest import write_image
from tests.test_training import _config, colours  # noqa: F401 - the fixture
from tl_core import limits
from tl_core.data import scan_dataset
from tl_core.training import train
from tl_core.uploads import FolderUpload


def test_a_zip_bomb_member_is_refused_and_the_pictures_beside_it_are_used(tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in ("cats", "dogs"):
            for i in range(5):
                picture = write_image(tmp_path / name / f"{i}.png", color=(40 * i, 90, 30 if name == "cats" else 200))
                zf.write(picture, f"{name}/{i}.png")
        zf.writestr("cats/huge.png", b"\0" * (30 * 1024**2))  # 30 MB of zeros pack into about 30 KB
    manifest = scan_dataset(archive)
    assert len(manifest.samples) == 10
    (bomb,) = [p for p in manifest.skipped if p.path == "cats/huge.png"]
    assert "zip bomb" in bomb.reason and "30 MB" in bomb.reason


def test_too_many_files_is_a_sentence_naming_the_setting(colours, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HEADSTART_MAX_FILES", "12")
    with pytest.raises(limits.LimitReached, match="has 30 files, more than the 12") as raised:
        scan_dataset(colours)
    assert "HEADSTART_MAX_FILES" in str(raised.value)
    with pytest.raises(limits.LimitReached, match="That folder has 30 files"):
        FolderUpload.announce([f"c{i % 2}/{i}.png" for i in range(30)], [100] * 30, [0.0] * 30)


def test_a_nearly_full_disk_starts_nothing_and_says_how_much_is_free(colours, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HEADSTART_MIN_FREE_GB", "1000000")  # more than any disk here has
    with pytest.raises(limits.LimitReached, match="A new run cannot start: the disk of .* GB free") as raised:
        train(_config(colours, tmp_path))
    assert "old runs are folders you can delete" in str(raised.value)
    assert not (tmp_path / "runs").exists()  # not even an empty run folder
    with pytest.raises(limits.LimitReached, match="This upload needs 0.00 GB and the disk"):
        FolderUpload.announce(["a/1.png", "b/2.png"], [100, 100], [0.0, 0.0])


def test_a_limit_set_to_no_number_keeps_its_default(monkeypatch):
    for text in ("inf", "nan", "-5", "0", "lots"):
        monkeypatch.setenv("HEADSTART_MAX_MEGAPIXELS", text)
        assert limits.current().pixels == 64_000_000


def test_the_table_the_page_shows_is_the_limits_in_force(monkeypatch):
    monkeypatch.setenv("HEADSTART_MAX_FILE_MB", "3")
    rows = {row["setting"]: row for row in limits.table()}
    assert set(rows) == {
        "HEADSTART_MAX_FILE_MB", "HEADSTART_MAX_MEGAPIXELS", "HEADSTART_MAX_FILES", "HEADSTART_MAX_ZIP_GB",
        "HEADSTART_MAX_ZIP_RATIO", "HEADSTART_MIN_FREE_GB",
    }  # fmt: skip
    assert rows["HEADSTART_MAX_FILE_MB"]["value"] == "3 MB"
    assert limits.file_too_large(4 * 1024**2) == "too large to be a usable picture (4 MB; the limit is 3 MB)"
    assert limits.file_too_large(3 * 1024**2) is None

"""A folder sent by a browser in batches: used only once every file is there, resumable, never outside its folder."""

from __future__ import annotations

import pytest

from tl_core import uploads
from tl_core.uploads import FolderUpload, IncompleteUpload


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


FILES = {
    "pets/cats/1.png": b"cat one",
    "pets/cats/2.png": b"cat two!",
    "pets/dogs/1.png": b"dog",
    "pets/dogs/.DS_Store": b"litter",
    "pets/../../escape.png": b"climb",
}


def _announce(files=FILES, modified=1.0):
    names = list(files)
    return FolderUpload.announce(names, [len(files[n]) for n in names], [modified] * len(names))


def test_every_file_must_arrive_before_the_folder_is_used(data_dir):
    upload = _announce()
    names = upload.names
    assert [names[i] for i in upload.needed()] == ["pets/cats/1.png", "pets/cats/2.png", "pets/dogs/1.png", names[4]]
    assert upload.expected == 4  # the .DS_Store is left out, as the scanner leaves it out
    for i in upload.needed()[:2]:
        upload.add(i, FILES[names[i]])
    with pytest.raises(IncompleteUpload) as missing:
        upload.finish()
    assert missing.value.missing == ["pets/dogs/1.png", "pets/../../escape.png"]
    assert "2 of 4 files did not arrive" in str(missing.value) and "zip" in str(missing.value)
    assert not upload.complete

    for i in upload.needed():
        upload.add(i, FILES[names[i]])
    folder = upload.finish()
    assert upload.complete and folder.is_relative_to(data_dir.resolve() / "uploads")
    assert (folder / "pets" / "cats" / "2.png").read_bytes() == b"cat two!"
    assert (folder / "pets" / "escape.png").read_bytes() == b"climb"  # '..' dropped: it stays inside the upload
    assert not (data_dir / "escape.png").exists() and not (data_dir.parent / "escape.png").exists()
    assert not (folder / "pets" / "dogs" / ".DS_Store").exists()


def test_the_same_folder_picked_again_resumes_with_what_is_missing(data_dir):
    first = _announce()
    first.add(0, FILES["pets/cats/1.png"])
    again = _announce()  # a refresh, a lost connection or a restart: a new announce of the same files
    assert again.folder == first.folder
    assert [again.names[i] for i in again.needed()] == ["pets/cats/2.png", "pets/dogs/1.png", again.names[4]]
    changed = _announce(modified=2.0)  # the same names, edited since: a new upload, nothing reused
    assert changed.folder != first.folder and len(changed.needed()) == 4


def test_a_file_that_changed_while_it_was_sent_is_refused_with_its_name(data_dir):
    upload = _announce()
    with pytest.raises(ValueError, match="'pets/cats/1.png' arrived with 3 bytes instead of 7"):
        upload.add(0, b"cat")
    with pytest.raises(ValueError, match="not in the folder it announced"):
        upload.add(3, b"litter")  # the .DS_Store was not asked for
    assert upload.needed()[0] == 0


def test_too_large_files_are_not_sent_and_are_reported(data_dir, monkeypatch):
    monkeypatch.setenv("HEADSTART_MAX_FILE_MB", str(7 / 1024**2))  # 7 bytes
    upload = _announce()
    assert upload.not_sent == [("pets/cats/2.png", "too large to be a usable picture (0 MB; the limit is 0 MB)")]
    for i in upload.needed():
        upload.add(i, FILES[upload.names[i]])
    folder = upload.finish()
    assert uploads.not_uploaded(folder) == upload.not_sent
    assert uploads.not_uploaded(data_dir) == []


def test_an_empty_folder_is_a_sentence(data_dir):
    with pytest.raises(ValueError, match="The folder is empty"):
        FolderUpload.announce([], [], [])
    with pytest.raises(ValueError, match="None of the files"):
        FolderUpload.announce([".hidden"], [1], [0.0])

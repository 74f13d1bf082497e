"""The Predict page labels many pictures at once (a folder, a zip), offers every answer as a CSV, says 'not sure'
under the operating point, and uses an exported bundle the person uploads."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from pathlib import Path

import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from tests.ui.conftest import assert_clean, table_with, texts
from tl_core.export import export_bundle
from tl_core.operating_point import save_rule
from tl_core.predict import Predictor


@pytest.fixture
def downloads(monkeypatch) -> list[tuple[bytes, str]]:
    """The bytes and MIME type of every file the page hands the browser (Streamlit's own storage still keeps them)."""
    seen: list[tuple[bytes, str]] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        if isinstance(path_or_data, bytes):
            seen.append((path_or_data, mimetype))
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return seen


@pytest.fixture
def three_digits(digits_dir) -> list[Path]:
    return [sorted((digits_dir / name).glob("*.png"))[0] for name in ("seven", "three", "zero")]


def csv_rows(downloads) -> list[dict]:
    (data,) = [d for d, mime in downloads if mime == "text/csv"][-1:]
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_a_folder_is_labelled_at_once_with_a_csv_of_every_answer(open_page, finished_run, three_digits, downloads):
    at = open_page("pages/predict.py", state={"hs_run": str(finished_run)})
    at.radio(key="predict_way").set_value("folder").run()
    folder = [(f"new/{p.parent.name}/{p.name}", p.read_bytes(), "image/png") for p in three_digits]
    folder += [("new/notes.txt", b"a shopping list", "text/plain"), ("new/.DS_Store", b"\0\0", "application/x")]
    at.file_uploader(key="predict_folder").set_value(folder).run()
    assert_clean(at)

    expected = Predictor.from_run(finished_run).predict_paths(three_digits)
    table = table_with(at, "picture")
    assert list(table["picture"]) == [name for name, _, _ in folder[:3]]
    assert list(table["label"]) == [r["label"] for r in expected]
    assert list(table["confidence"]) == pytest.approx([100 * r["confidence"] for r in expected], abs=1e-4)  # in %
    assert "'new/notes.txt' is left out: not an image file" in texts(at)  # the litter (.DS_Store) says nothing
    assert "**3** picture(s) labelled, 1 left out." in texts(at)
    assert len(at.image) == 6  # each picture and its heat map

    rows = csv_rows(downloads)
    assert [r["picture"] for r in rows] == [name for name, _, _ in folder[:4]]
    for row, want in zip(rows, expected, strict=False):
        assert (row["label"], row["sure"]) == (want["label"], "True")
        assert float(row["confidence"]) == pytest.approx(want["confidence"], abs=1e-6)
        assert [row[f"top_{i}"] for i in (1, 2, 3)] == [t["label"] for t in want["top_k"]]
        assert float(row["top_2_confidence"]) == pytest.approx(want["top_k"][1]["confidence"], abs=1e-6)
    assert rows[3]["label"] == "" and rows[3]["error"].startswith("not an image file")


def test_a_zip_of_pictures_and_answers_under_the_operating_point(open_page, finished_run, three_digits, tmp_path,
                                                                  monkeypatch, downloads):  # fmt: skip
    run = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, run)
    predictor = Predictor.from_run(run)
    confidences = sorted(r["confidence"] for r in predictor.predict_paths(three_digits))
    threshold = (confidences[0] + confidences[1]) / 2  # the least sure of the three falls under it
    save_rule(run, {"kind": "not_sure_below", "threshold": threshold})
    monkeypatch.setenv("HEADSTART_RUNS_DIR", str(tmp_path / "runs"))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for p in three_digits:
            zf.write(p, f"batch/{p.parent.name}.png")
        zf.writestr("../escape.png", b"x")  # refused by the zip safety, reported, the rest labelled
    at = open_page("pages/predict.py", state={"hs_run": str(run)})
    at.radio(key="predict_way").set_value("zip").run()
    at.file_uploader(key="predict_zip").set_value(("pictures.zip", archive.getvalue(), "application/zip")).run()
    assert_clean(at)

    expected = Predictor.from_run(run).predict_paths(three_digits)
    unsure = [r for r in expected if not r["sure"]]
    assert len(unsure) == 1
    labels = list(table_with(at, "picture")["label"])
    assert sorted(labels) == sorted(
        r["label"] if r["sure"] else f"not sure (best guess {r['label']})" for r in expected
    )
    assert f"**not sure** (best guess {unsure[0]['label']})" in texts(at)
    assert "is left out: refused: its path would write outside" in texts(at)
    rows = csv_rows(downloads)
    assert sorted(r["sure"] for r in rows if r["label"]) == ["False", "True", "True"]


def test_an_uploaded_bundle_labels_as_its_run_and_a_bad_one_is_a_sentence(open_page, finished_run, three_digits,
                                                                           tmp_path):  # fmt: skip
    bundle = export_bundle(finished_run, tmp_path / "bundle.zip")
    at = open_page("pages/predict.py")
    at.radio(key="predict_source").set_value("bundle").run()
    at.file_uploader(key="predict_bundle").set_value(("not-a-model.zip", b"PK but no zip", "application/zip")).run()
    assert_clean(at)
    shown = at.error[0].value.replace("\\", "")  # as it reads: the page escapes markdown in messages
    assert shown.startswith("The exported model cannot be used: 'not-a-model.zip' is not a zip file. Give the .zip")

    at.file_uploader(key="predict_bundle").set_value(("model.zip", bundle.read_bytes(), "application/zip")).run()
    at.file_uploader(key="predict_files").set_value([(p.name, p.read_bytes(), "image/png") for p in three_digits]).run()
    assert_clean(at)
    assert "Classes it knows: eight, five, four" in texts(at)
    expected = Predictor.from_run(finished_run).predict_paths(three_digits)
    table = table_with(at, "picture")
    assert list(table["label"]) == [r["label"] for r in expected]
    assert list(table["confidence"]) == pytest.approx([100 * r["confidence"] for r in expected])  # the same numbers

"""The exported bundle gives Headstart's answers anywhere: predict.py (PyTorch), predict_onnx.py (ONNX Runtime, with
torch and timm blocked), its int8 model, and the bundle read back into Headstart; a wrong ONNX graph stops the export.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core import onnx_export
from tl_core.bundle import BundleError, load_bundle, load_predictor
from tl_core.export import export_bundle
from tl_core.images import open_rgb
from tl_core.onnx_export import ParityError
from tl_core.operating_point import save_rule
from tl_core.predict import Predictor
from tl_core.runs import read_json, write_json_atomic

REPO = Path(__file__).resolve().parents[1]

# Runs a script with torch, timm, safetensors and Headstart made unimportable: `import torch` anywhere in it (or in
# what it imports) raises ModuleNotFoundError, so a script that runs to the end under it needs none of them.
NO_TORCH = """
import importlib.abc, runpy, sys

BLOCKED = {"torch", "timm", "torchvision", "safetensors", "tl_core"}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named '{name}' (blocked by the test)")
        return None


sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def bundle(finished_run, tmp_path_factory) -> Path:
    return export_bundle(finished_run, tmp_path_factory.mktemp("export") / "bundle.zip")


@pytest.fixture(scope="module")
def unpacked(bundle, tmp_path_factory) -> Path:
    """The bundle unzipped into an empty folder, far from the repository and its tl_core."""
    folder = tmp_path_factory.mktemp("elsewhere") / "bundle"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(folder)
    (folder.parent / "no_torch.py").write_text(NO_TORCH)
    return folder


@pytest.fixture(scope="module")
def validation(finished_run) -> list[Path]:
    split = read_json(finished_run / "split.json")
    return [Path(split["root"]) / f["path"] for f in split["files"] if f["split"] == "val"]


@pytest.fixture(scope="module")
def pictures(validation, digits_dir, tmp_path_factory) -> list[Path]:
    """A few validation pictures (one of each of six classes), a 12-bit PNG and a file that is no picture."""
    folder = tmp_path_factory.mktemp("pictures")
    digit = np.asarray(open_rgb(sorted((digits_dir / "seven").glob("*.png"))[0]).convert("L"), dtype=np.float64)
    twelve_bit = folder / "seven_12bit.png"
    Image.fromarray((digit / 255 * 4095).astype(np.uint16)).save(twelve_bit)  # a detector's 12 bits in 16-bit PNG
    assert np.asarray(open_rgb(twelve_bit)).max() >= 250  # full range kept, not crushed to 1/16th
    broken = folder / "broken.png"
    broken.write_bytes(b"not a picture")
    return [*validation[::7], twelve_bit, broken]


def lines(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


def cli_predict(target: Path, paths: list[Path]) -> list[dict]:
    command = [sys.executable, "-m", "tl_core", "predict", str(target), *map(str, paths), "--json"]
    return lines(subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300))


def bundle_script(folder: Path, script: str, paths: list[Path], *options: str, no_torch: bool = False) -> list[dict]:
    # -I: no PYTHONPATH, no user site, not even the current folder: what the script needs must be installed
    runner = ["-I", str(folder.parent / "no_torch.py")] if no_torch else []
    command = [sys.executable, *runner, script, *options, *map(str, paths)]
    return lines(subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300))


def assert_same_answers(expected: list[dict], got: list[dict], tolerance: float = 1e-4) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in expected]
    for want, have in zip(expected, got, strict=True):
        if want.get("error"):
            assert "cannot read this image" in have["error"]  # one bad file does not stop the others
            continue
        assert (have["label"], have["sure"]) == (want["label"], want["sure"]), want["path"]
        assert abs(have["confidence"] - want["confidence"]) < tolerance
        assert [t["label"] for t in have["top_k"]] == [t["label"] for t in want["top_k"]]
        assert np.allclose([t["confidence"] for t in have["top_k"]], [t["confidence"] for t in want["top_k"]],
                           atol=tolerance, rtol=0)  # fmt: skip


def test_the_report_and_the_card_hold_the_measured_numbers(bundle, finished_run):
    summary = read_json(finished_run / "summary.json")
    with zipfile.ZipFile(bundle) as zf:
        report = json.loads(zf.read("export_report.json"))
        card = zf.read("README.md").decode()
        sizes = {i.filename: i.file_size for i in zf.infolist()}
    assert report["checked_on"] == {**report["checked_on"], "pictures": summary["num_val"], "source": "validation"}
    assert report["onnx"]["max_probability_difference"] <= 1e-4
    assert report["onnx"]["max_log_probability_difference"] <= 1e-3
    assert report["onnx"]["labels_agree"] == summary["num_val"]
    # every validation picture was checked, so PyTorch's accuracy there is the run's own
    assert report["accuracy"]["pytorch"] == pytest.approx(summary["best_val_accuracy"])
    assert report["accuracy"]["onnx"] == report["accuracy"]["pytorch"]
    int8 = report["int8"]
    assert int8["made"] and int8["kept"] in ("static", "dynamic")
    assert set(int8["candidates"]) == {"static", "dynamic"}
    assert int8["labels_agree"] == max(c.get("labels_agree", -1) for c in int8["candidates"].values())
    assert int8["accuracy_change"] == pytest.approx(report["accuracy"]["int8"] - report["accuracy"]["pytorch"])
    assert {k: sizes[k] for k in report["files"]} == report["files"]
    assert sizes["model.int8.onnx"] < sizes["model.onnx"] / 2
    assert all(report["ms_per_picture"][k] > 0 for k in ("pytorch", "onnx", "int8"))
    for shown in (
        f"{sizes['model.onnx'] / 1024**2:.1f} MB",
        f"{sizes['model.int8.onnx'] / 1024**2:.1f} MB",
        f"| {report['ms_per_picture']['onnx']:.1f} |",
        f"label on {int8['labels_agree']} of {summary['num_val']} pictures",
        f"temperature {summary['calibration']['temperature']:.3g}",
        "| true \\ said |",
    ):
        assert shown in card, shown


def test_the_scripts_give_the_cli_answers_and_onnx_needs_no_torch(bundle, unpacked, finished_run, pictures, validation):
    from_run = cli_predict(finished_run, pictures)
    assert "error" in from_run[-1] and all(r["label"] for r in from_run[:-1])
    assert cli_predict(bundle, pictures) == from_run  # a bundle in place of RUN_DIR: the same answers
    assert_same_answers(from_run, bundle_script(unpacked, "predict.py", pictures))
    assert_same_answers(from_run, bundle_script(unpacked, "predict_onnx.py", pictures, no_torch=True))

    # int8 on every validation picture, read from its file: the report's figure is what the int8 model does there
    int8 = bundle_script(unpacked, "predict_onnx.py", [*validation, pictures[-1]], "--int8", no_torch=True)
    assert "error" in int8[-1] and all(r["label"] in read_json(unpacked / "labels.json") for r in int8[:-1])
    expected = [r["label"] for r in Predictor.from_run(finished_run).predict_paths(validation)]
    agree = sum(r["label"] == label for r, label in zip(int8, expected, strict=False))
    assert agree == json.loads((unpacked / "export_report.json").read_text())["int8"]["labels_agree"]


def test_the_torch_block_is_real(unpacked):
    probe = unpacked.parent / "needs_torch.py"
    probe.write_text("import numpy\nimport torch\n")
    done = subprocess.run([sys.executable, "-I", str(unpacked.parent / "no_torch.py"), str(probe)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "No module named 'torch' (blocked by the test)" in done.stderr


def test_entries_unpack_as_ordinary_files(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as zf:
        infos = zf.infolist()
    assert {"model.onnx", "model.int8.onnx", "predict_onnx.py", "export_report.json"} <= {i.filename for i in infos}
    assert {stat.S_IMODE(i.external_attr >> 16) for i in infos} == {0o644}
    assert all(stat.S_ISREG(i.external_attr >> 16) for i in infos)
    if shutil.which("unzip"):
        subprocess.run(["unzip", "-q", str(bundle), "-d", str(tmp_path / "u")], check=True, timeout=60)
        modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "u").iterdir()}
        assert modes == {0o644 & ~_umask()}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _graph_of(bundle: Path):
    """A stand-in for the exporter: the graph already exported from these same weights (skips a 10 s export)."""

    def write(model, img_size, path):
        with zipfile.ZipFile(bundle) as zf:
            path.write_bytes(zf.read("model.onnx"))
        return "the graph of the first export"

    return write


def test_an_onnx_graph_that_answers_differently_stops_the_export(bundle, finished_run, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    def altered(model, img_size, path):
        _graph_of(bundle)(model, img_size, path)
        graph = onnx.load(str(path))
        bias = next(t for t in graph.graph.initializer if t.name == "classifier.bias")
        values = numpy_helper.to_array(bias).copy()
        values[0] += 0.05  # a small fault: one class a little likelier than PyTorch makes it
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
        onnx.save(graph, str(path))
        return "an altered graph"

    monkeypatch.setattr(onnx_export, "to_onnx", altered)
    out = tmp_path / "out" / "bundle.zip"
    with pytest.raises(ParityError) as failure:
        export_bundle(finished_run, out)
    message = str(failure.value)
    assert message.startswith("The ONNX model does not answer as the trained model does: on 40 validation pictures")
    assert "(at most 1e-04 is allowed), its log-probabilities by up to 0.05 (at most 1e-03)" in message
    assert "No bundle was written." in message
    assert list((tmp_path / "out").iterdir()) == []  # no zip, no half-written temporary file


def test_mirror_temperature_and_operating_point_travel_with_the_bundle(bundle, finished_run, pictures, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    run = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, run)
    summary = read_json(run / "summary.json")
    summary["tta"]["mirror"] = True
    summary["calibration"]["temperature"] = 2.5  # flatter: some answers fall under the threshold below
    write_json_atomic(run / "summary.json", summary)
    save_rule(run, {"kind": "not_sure_below", "threshold": 0.6})
    monkeypatch.setattr(onnx_export, "to_onnx", _graph_of(bundle))  # the graph holds none of the three
    made = export_bundle(run, tmp_path / "b.zip")
    folder = tmp_path / "elsewhere" / "b"
    with zipfile.ZipFile(made) as zf:
        zf.extractall(folder)
    (folder.parent / "no_torch.py").write_text(NO_TORCH)

    from_run = Predictor.from_run(run).predict_paths(pictures)  # what the CLI prints (tested above), in-process
    assert {r["sure"] for r in from_run[:-1]} == {True, False}
    plain = Predictor.from_run(finished_run).predict_paths(pictures)
    assert [r["confidence"] for r in from_run] != [r["confidence"] for r in plain]
    assert_same_answers(from_run, bundle_script(folder, "predict.py", pictures))
    assert_same_answers(from_run, bundle_script(folder, "predict_onnx.py", pictures, no_torch=True))
    loaded = load_bundle(made)
    assert (loaded.mirror, loaded.temperature, loaded.rule) == (True, 2.5, {"kind": "not_sure_below", "threshold": 0.6})


def test_a_bundle_comes_back_as_the_runs_predictor(bundle, unpacked, finished_run, pictures):
    original = Predictor.from_run(finished_run)
    expected = original.predict_paths(pictures)
    for source in (bundle, unpacked):
        loaded = load_predictor(source)
        assert (loaded.class_names, loaded.spec, loaded.backbone) == (original.class_names, original.spec,
                                                                      original.backbone)  # fmt: skip
        assert (loaded.mirror, loaded.temperature, loaded.rule) == (
            original.mirror,
            original.temperature,
            original.rule,
        )
        assert loaded.predict_paths(pictures) == expected  # the same weights and code: identical, not merely close
    assert isinstance(load_predictor(finished_run), Predictor)  # a run folder still opens as a run


def _rezip(bundle: Path, out: Path, drop: str | None = None, replace: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != drop:
                dst.writestr(info.filename, (replace or {}).get(info.filename, src.read(info)))
    return out


def test_what_is_not_a_usable_bundle_is_refused_with_a_sentence(bundle, digits_dir, tmp_path):
    picture = sorted((digits_dir / "seven").glob("*.png"))[0]
    with pytest.raises(BundleError, match=r"^'seven.png' is not a zip file\. Give the \.zip that Headstart's Export"):
        load_bundle(shutil.copy(picture, tmp_path / "seven.png"))

    pictures_zip = tmp_path / "pictures.zip"
    with zipfile.ZipFile(pictures_zip, "w") as zf:
        zf.write(picture, "seven/1.png")
    with pytest.raises(BundleError, match=r"^'pictures.zip' is not a Headstart bundle: it has no preprocessing.json"):
        load_bundle(pictures_zip)

    with pytest.raises(BundleError, match=r"^The bundle 'no_labels.zip' has no labels.json, which the model needs"):
        load_bundle(_rezip(bundle, tmp_path / "no_labels.zip", drop="labels.json"))

    three = json.dumps(["cat", "dog", "bird"]).encode()
    with pytest.raises(BundleError, match=r"has weights for 10 classes, but labels.json names 3"):
        load_bundle(_rezip(bundle, tmp_path / "three.zip", replace={"labels.json": three}))

    with pytest.raises(BundleError, match=r"^model.safetensors in 'cut.zip' cannot be read"):
        load_bundle(_rezip(bundle, tmp_path / "cut.zip", replace={"model.safetensors": b"\x08" + b"\0" * 20}))

    with pytest.raises(BundleError, match=r"^labels.json in 'bad_json.zip' cannot be read"):
        load_bundle(_rezip(bundle, tmp_path / "bad_json.zip", replace={"labels.json": b'["cat",'}))

    # the command line says the same in one line on stderr
    done = subprocess.run(
        [sys.executable, "-m", "tl_core", "predict", str(pictures_zip), str(picture), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert (
        done.stderr.startswith("headstart: 'pictures.zip' is not a Headstart bundle") and done.stderr.count("\n") == 1
    )


def test_a_run_whose_pictures_are_gone_is_checked_on_generated_ones(bundle, finished_run, tmp_path, monkeypatch):
    run = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, run)
    split = read_json(run / "split.json")
    write_json_atomic(run / "split.json", {**split, "root": str(tmp_path / "moved away")})
    monkeypatch.setattr(onnx_export, "to_onnx", _graph_of(bundle))
    with zipfile.ZipFile(export_bundle(run, tmp_path / "b.zip")) as zf:
        report = json.loads(zf.read("export_report.json"))
        card = zf.read("README.md").decode()
    assert report["checked_on"]["source"] == "generated" and report["checked_on"]["pictures"] == 8
    assert report["onnx"]["labels_agree"] == 8 and report["onnx"]["max_probability_difference"] <= 1e-4
    assert report["accuracy"] == {"pytorch": None, "onnx": None, "int8": None}
    assert "8 generated pictures (the run's own were no longer on disk)" in card

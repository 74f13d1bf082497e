"""Every page of the web app through Streamlit's AppTest, with and without data and a finished run.

The tests assert on what a person sees: class names and counts, accuracy, labels, the files of the export.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.ui.conftest import assert_clean, metric, table_with, texts, wait_for_job
from tl_core import formatting as fmt
from tl_core.devices import device_choices
from tl_core.metrics import evaluate_run
from tl_core.predict import Predictor

DIGITS = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]


def run_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def digits_root(run: Path) -> Path:
    return Path(json.loads((run / "config.json").read_text())["data_dir"])


def dataset_state(path: Path, origin: str = "test digits") -> dict:
    return {"hs_dataset": {"path": str(path), "origin": origin}}


# ---------------------------------------------------------------- Home


def test_home_without_runs(open_page, empty_runs):
    at = open_page()
    shown = texts(at)
    assert at.title[0].value == "Headstart"
    assert "CPU" in metric(at, "Trains on") or "GiB" in metric(at, "Trains on")
    assert metric(at, "Data set") == "none yet"
    assert "No run yet" in shown
    assert "No training is running" in shown


def test_home_with_finished_run(open_page, finished_run):
    at = open_page()
    table = at.dataframe[0].value
    row = table[table["folder"] == finished_run.name].iloc[0]
    assert row["run"].startswith("Feature extraction · EfficientNet-Lite0 · sample-digits-20 · ")  # what it was
    assert row["status"] == "finished"
    assert row["classes"] == 10
    summary = run_summary(finished_run)
    assert row["validation accuracy"] == pytest.approx(100 * summary["best_val_accuracy"])
    assert row["training time"] == fmt.duration(summary["train_seconds"])


def test_home_resumes_a_run_that_was_cut_off(open_page, empty_runs, tmp_path):
    from tests.conftest import write_image
    from tl_core.events import EpochEnd
    from tl_core.runs import load_run
    from tl_core.training import TrainConfig, train

    for name, color in [("red", (220, 30, 30)), ("blue", (30, 30, 220))]:
        for i in range(8):
            write_image(tmp_path / "colours" / name / f"{i}.png", color=color)

    def power_cut(event) -> None:
        if isinstance(event, EpochEnd) and event.epoch == 2:
            raise RuntimeError("power cut")

    config = TrainConfig(
        str(tmp_path / "colours"), backbone="test_efficientnet", weights="none", freeze="none", epochs=4,
        img_size=32, batch_size=8, runs_dir=str(empty_runs), tta="off",
    )  # fmt: skip
    with pytest.raises(RuntimeError):
        train(config, on_event=power_cut)
    (run,) = [r for r in empty_runs.iterdir() if r.is_dir()]
    assert load_run(run).can_resume

    at = open_page()
    assert "Cut off before they ended" in texts(at)
    at.button(key=f"home_resume_{run.name}").click().run()
    snap = wait_for_job(at)
    assert snap.state == "finished" and snap.run_dir == str(run)
    resumed = load_run(run)
    assert resumed.status == "finished" and resumed.summary["epochs_run"] == 4
    assert "Cut off before they ended" not in texts(at)


# ---------------------------------------------------------------- Data


def test_data_without_dataset(open_page):
    at = open_page("pages/data.py")
    assert "No data set yet" in texts(at)
    assert at.radio(key="data_source").value == "folder"
    # a folder on the server only where its owner shared one (HEADSTART_SERVER_DATA_ROOT)
    assert "Folder on this server" not in at.radio(key="data_source").options
    limits_shown = at.table[0].value
    assert "HEADSTART_MAX_FILES" in set(limits_shown["setting"]) and len(limits_shown) == 6


def test_data_sample_digits(open_page):
    at = open_page("pages/data.py")
    at.radio(key="data_source").set_value("sample").run()
    at.number_input(key="data_sample_per_class").set_value(10).run()
    at.button(key="data_sample_use").click().run()
    assert_clean(at)
    assert metric(at, "Classes") == "10"
    assert metric(at, "Pictures") == "100"
    assert metric(at, "Training / validation") == "80 / 20"
    shown = texts(at)
    for name in DIGITS:
        assert f"**{name}** · 10 pictures" in shown
    assert "No problem found" in shown
    assert at.get("plotly_chart"), "the class counts chart is missing"
    assert len(at.image) == 10  # one row of thumbnails per class
    assert all(len(row.value) == 6 for row in at.image)


def _folder_upload(digits_dir: Path, per_class: int = 6) -> list[tuple[str, bytes, str]]:
    files = []
    for class_dir in sorted(digits_dir.iterdir()):
        if class_dir.is_dir():
            for image in sorted(class_dir.glob("*.png"))[:per_class]:
                files.append((f"mydigits/{class_dir.name}/{image.name}", image.read_bytes(), "image/png"))
    return files


def _send_folder(files: list[tuple[str, bytes, str]], batch: int = 16, resend: bool = False, lose: int = 0) -> dict:
    """What the browser's folder uploader sends (pages/_folder_upload.js), through the page's own handler."""
    from pages._folder_upload import handle_event

    state: dict = {}
    names, data = [f[0] for f in files], [f[1] for f in files]
    handle_event({"kind": "announce", "token": "t", "seq": 1, "names": names, "sizes": [len(d) for d in data],
                  "modified": [0.0] * len(files)}, state)  # fmt: skip
    needed = [i for a, b in state["needed"] for i in range(a, b)][: len(files) - lose]
    seq = 1
    for start in range(0, len(needed), batch):
        seq += 1
        chunk = needed[start : start + batch]
        event = {"kind": "batch", "token": "t", "seq": seq,
                 "files": [{"i": i, "b64": base64.b64encode(data[i]).decode()} for i in chunk]}  # fmt: skip
        handle_event(event, state)
        if resend:
            handle_event(event, state)  # a confirmation lost on the way: the same batch again, harmless
        assert state["ack"] == seq
    handle_event({"kind": "finish", "token": "t", "seq": seq + 1}, state)
    return state


def test_data_folder_upload_is_saved_and_checked(open_page, digits_dir, session_dirs):
    files = _folder_upload(digits_dir)
    files.append(("mydigits/zero/notes.txt", b"not a picture", "text/plain"))
    extra = sorted((digits_dir / "zero").glob("*.png"))[6].read_bytes()
    files.append(("mydigits/../../../zero/escape.png", extra, "image/png"))  # must not climb out of the folder
    state = _send_folder(files, resend=True)
    assert "error" not in state, state.get("error")
    stored = Path(state["folder"])
    assert stored.is_relative_to(session_dirs["data"].resolve() / "uploads")
    assert (stored / "mydigits" / "zero" / "notes.txt").exists()
    assert (stored / "mydigits" / "zero" / "escape.png").exists()
    assert not list(session_dirs["data"].parent.rglob("escape.png"))[1:]  # written once, inside the upload

    at = open_page("pages/data.py", state={"hs_dataset": {"path": str(stored), "origin": "uploaded folder 'mydigits'"}})
    assert_clean(at)
    assert metric(at, "Classes") == "10"
    assert metric(at, "Pictures") == "61"
    skipped = table_with(at, "why")
    assert "zero/notes.txt" in set(skipped["file"])
    assert "not an image" in skipped[skipped["file"] == "zero/notes.txt"]["why"].iloc[0]


def test_a_folder_upload_with_a_file_missing_is_not_used(digits_dir):
    from pages._folder_upload import handle_event

    files = _folder_upload(digits_dir, per_class=5)
    state = _send_folder(files, lose=1)  # announced, but the last file never arrives
    assert "folder" not in state
    assert state["missing"] == [files[-1][0]]
    assert "1 of 50 files did not arrive" in state["error"] and "Pick the same folder again" in state["error"]
    ack = state["ack"]
    handle_event({"kind": "batch", "token": "old", "seq": 99, "files": []}, state)  # an older upload's: ignored
    assert state["ack"] == ack


def test_data_zip_upload(open_page, digits_dir):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data, _ in _folder_upload(digits_dir, per_class=5):
            zf.writestr(name, data)
    at = open_page("pages/data.py")
    at.radio(key="data_source").set_value("zip").run()
    at.file_uploader[0].set_value(("digits.zip", buffer.getvalue(), "application/zip")).run()
    at.run()
    assert_clean(at)
    assert at.session_state["hs_dataset"]["path"].endswith(".zip")
    assert metric(at, "Classes") == "10"
    assert metric(at, "Pictures") == "50"
    assert "Very few images" not in texts(at)


def test_data_broken_zip_is_a_sentence(open_page):
    at = open_page("pages/data.py")
    at.radio(key="data_source").set_value("zip").run()
    at.file_uploader[0].set_value(("broken.zip", b"this is not a zip", "application/zip")).run()
    at.run()
    assert_clean(at)
    errors = " ".join(e.value for e in at.error)
    assert "Headstart cannot use these pictures" in errors and "neither a folder nor a zip" in errors


def test_data_server_path_is_limited_to_the_root(open_page, digits_dir, monkeypatch):
    monkeypatch.setenv("HEADSTART_SERVER_DATA_ROOT", str(digits_dir.parent))
    at = open_page("pages/data.py")
    at.radio(key="data_source").set_value("server").run()
    at.text_input(key="data_server_path").input("/etc").run()
    at.button(key="data_server_use").click().run()
    assert_clean(at)
    assert "outside the folder this server shares" in at.error[0].value
    at.text_input(key="data_server_path").input(digits_dir.name).run()  # relative to the root
    at.button(key="data_server_use").click().run()
    assert_clean(at)
    assert metric(at, "Classes") == "10"
    assert metric(at, "Pictures") == "200"


def test_data_with_one_class_explains(open_page, tmp_path, digits_dir, monkeypatch):
    one = tmp_path / "one_class" / "zero"
    one.mkdir(parents=True)
    for image in sorted((digits_dir / "zero").glob("*.png"))[:6]:
        (one / image.name).write_bytes(image.read_bytes())
    at = open_page("pages/data.py", state=dataset_state(one.parent))
    assert_clean(at)
    assert "Only one class was found, 'zero'" in at.error[0].value
    assert str(tmp_path) not in at.error[0].value and "one\\_class" not in at.error[0].value  # no server folder


def test_class_names_with_markdown_and_html_show_as_typed(open_page, tmp_path, digits_dir):
    names = ["**new** cells", "<img src=x onerror=alert(1)>", "[link](example.com) $x$ :red[no]"]
    for name, digit in zip(names, ["zero", "one", "two"], strict=True):
        (tmp_path / "odd" / name).mkdir(parents=True)
        for image in sorted((digits_dir / digit).glob("*.png"))[:6]:
            (tmp_path / "odd" / name / image.name).write_bytes(image.read_bytes())
    at = open_page("pages/data.py", state=dataset_state(tmp_path / "odd"))
    assert_clean(at)
    shown = [m.value for m in at.markdown]
    assert "**\\*\\*new\\*\\* cells** · 6 pictures" in shown  # bold, with the asterisks as characters
    assert any("\\<img src=x onerror=alert(1)\\>" in m for m in shown)
    assert any("\\[link\\](example.com) \\$x\\$ \\:red\\[no\\]" in m for m in shown)


# ---------------------------------------------------------------- Model


def test_model_catalogue_and_recommendation(open_page):
    at = open_page("pages/model.py")
    table = table_with(at, "timm name")
    assert len(table) == 12
    lite0 = table.iloc[0]  # the recommendation first, in the words of the table
    assert lite0["timm name"] == "tf_efficientnet_lite0" and lite0["model"] == "EfficientNet-Lite0 (recommended)"
    assert lite0["usable here"] == "yes: offline package"
    assert lite0["how well it sees (%)"] == pytest.approx(74.8)
    resnet = table[table["timm name"] == "resnet18"].iloc[0]
    assert resnet["usable here"] == "no: its weights need the internet (model hub)"  # says what 'none here' meant
    assert lite0["Quick model, 1,000 pictures"] == "not measured yet"
    assert "Recommended here: EfficientNet-Lite0" in at.success[0].value  # offline, no GPU: the offline backbone
    at.selectbox(key="model_backbone").set_value("resnet18").run()
    assert at.session_state["hs_backbone"] == "resnet18"
    assert "No pretrained weights for ResNet-18" in texts(at)  # hub unreachable in tests
    at.radio(key="model_weights").set_value("none").run()
    assert at.session_state["hs_weights"] == "none"


def test_model_page_shows_speeds_measured_here(open_page):
    from tl_core.speed import measure_speed, remember_speed

    measured = measure_speed("tf_efficientnet_lite0", batch_size=2, img_size=64, seconds=0.1)
    remember_speed(measured)
    table = table_with(open_page("pages/model.py"), "timm name")
    lite0 = table[table["timm name"] == "tf_efficientnet_lite0"].iloc[0]
    assert lite0["fine-tune all, 1,000 pictures per epoch"] == fmt.duration(
        1000 / measured["training_images_per_second"]
    )
    assert lite0["Quick model, 1,000 pictures"] == fmt.duration(1000 / measured["inference_images_per_second"])


# ---------------------------------------------------------------- Train


def lite0_blocks() -> int:
    import timm

    from tl_core.freezing import model_blocks

    return len(model_blocks(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)))


def test_train_without_data(open_page, empty_runs):
    at = open_page("pages/train.py")
    shown = texts(at)
    assert "No data set yet" in shown
    assert at.button(key="train_start").disabled
    assert at.button(key="train_quick").disabled
    assert at.radio(key="train_strategy").value == "auto"  # Auto is the app's default
    assert at.number_input(key="train_epochs").disabled  # Auto chooses the epochs
    total = lite0_blocks()
    _manual(at)
    assert metric(at, "Blocks frozen") == f"{total} of {total}"  # feature extraction freezes every block
    assert "No training on this server yet" in shown


def _manual(at):
    at.radio(key="train_strategy").set_value("manual").run()  # Auto is the default; the freeze controls are Manual's
    return at


def _strategy(at):
    return at.segmented_control[0]  # keyed by a generation (pages/train.py): found by position, the page's only one


def _depth_slider(at):
    return next(s for s in at.slider if s.label.startswith("Frozen blocks"))


def test_train_strategy_presets_move_the_strip(open_page, digits_dir):
    at = _manual(open_page("pages/train.py", state=dataset_state(digits_dir)))
    total = lite0_blocks()
    assert metric(at, "Blocks frozen") == f"{total} of {total}"
    assert _strategy(at).value == "feature"  # every block frozen is feature extraction, and it says so
    head_only = metric(at, "Trainable parameters")
    assert head_only == "12,810"  # 1280 features x 10 classes + 10 biases
    _strategy(at).set_value("all").run()
    assert _depth_slider(at).value == 0
    assert metric(at, "Trainable parameters") == metric(at, "Total parameters")
    _strategy(at).set_value("top").run()
    assert _depth_slider(at).value == total - round(total / 3)  # the last third trains
    _depth_slider(at).set_value(1).run()
    assert _strategy(at).value is None  # a custom depth
    assert metric(at, "Blocks frozen") == f"1 of {total}"
    _depth_slider(at).set_value(total).run()
    assert _strategy(at).value == "feature"


def test_train_on_lists_the_devices_found(open_page, digits_dir):
    at = open_page("pages/train.py", state=dataset_state(digits_dir))
    found = device_choices()
    box = at.selectbox(key="train_device_choice")
    assert box.options == [c.label for c in found]
    assert (at.session_state["train_device"], at.session_state["train_processes"]) == (found[0].device, 1)
    several = next(c for c in found if c.processes == 2)
    _manual(at)
    at.selectbox(key="train_device_choice").set_value(several.label).run()
    assert at.session_state["train_processes"] == 1  # every block frozen: the head is fitted in one process
    assert "one process does it" in texts(at)
    _strategy(at).set_value("top").run()  # the last blocks fine-tune: now the processes share each step
    assert (at.session_state["train_device"], at.session_state["train_processes"]) == (several.device, 2)
    assert "2 processes: each step's 32 pictures (the batch size above) are shared out" in texts(at)


def test_train_quick_model_runs_to_the_end(open_page, digits_dir, empty_runs):
    at = open_page("pages/train.py", state=dataset_state(digits_dir))
    at.select_slider(key="train_img_size").set_value(64).run()
    assert at.number_input(key="train_epochs").disabled  # feature extraction fits the head: epochs do not apply
    at.button(key="train_quick").click().run()
    assert_clean(at)
    snap = wait_for_job(at)
    assert_clean(at)
    assert snap.state == "finished", snap.error
    assert snap.config["freeze"] == "all" and snap.config["augment"] == "off"
    assert (snap.config["device"], snap.config["processes"]) == (device_choices()[0].device, 1)  # "Train on"
    shown = texts(at)
    assert "Fast path" in shown  # the feature cache was used, and the page says so
    assert metric(at, "Training") == "head fitted in one go"  # whatever the epochs said: no "1 of 1" epochs
    assert "regularisation strengths were tried by" in shown
    assert table_with(at, "held-out accuracy")["chosen"].tolist().count("yes") == 1
    best = max(h["val_accuracy"] for h in snap.history)
    assert metric(at, "Best validation accuracy") == f"{best:.1%}"
    assert f"The kept model is epoch {snap.summary['best_epoch']}'s, the best on validation: {best:.1%}" in shown
    assert at.session_state["hs_run"] == snap.run_dir
    (chart,) = at.get("plotly_chart")  # no strip in Auto, the default mode; no steps: no loss or rate curves, but
    tried = json.loads(chart.proto.spec)["data"][0]  # the strengths the fit tried, as the table lists them
    assert len(tried["x"]) == len(snap.summary["probe"]["tried"])
    assert "No loss or learning-rate curves: the head was fitted in one go" in texts(at)
    assert metric(at, "Speed").endswith("pictures/s") and not metric(at, "Speed").startswith("0")

    at.switch_page("pages/evaluate.py").run()  # the run just trained is the one evaluated
    assert_clean(at)
    assert metric(at, "Validation accuracy") == f"{evaluate_run(snap.run_dir).accuracy:.1%}"


def test_train_second_person_is_queued_and_can_stop(open_page, digits_dir, empty_runs):
    state = dataset_state(digits_dir)
    first = _manual(open_page("pages/train.py", state=state))
    first.select_slider(key="train_img_size").set_value(64).run()
    _strategy(first).set_value("all").run()
    first.number_input(key="train_epochs").set_value(50).run()
    first.button(key="train_start").click().run()
    first_job = first.session_state["hs_job"]
    second = open_page("pages/train.py", state=state)  # another person, another tab, or the same one refreshed
    assert first_job in texts(second)  # sees the job already running
    home = open_page()
    assert metric(home, "Job") in ("queued", "running")  # and so does the home page
    second.select_slider(key="train_img_size").set_value(64).run()
    second.button(key="train_start").click().run()
    assert_clean(second)
    assert "Waiting: 1 job(s) ahead of this one" in texts(second)
    second.button(key="train_stop").click().run()
    assert wait_for_job(second, timeout=30).state == "cancelled"
    first.run()
    assert_clean(first)
    first.button(key="train_stop").click().run()
    snap = wait_for_job(first, timeout=60)
    assert snap.state == "stopped"
    assert "Stopped" in texts(first)


def test_train_auto_within_a_minute_says_what_it_chose(open_page, digits_dir, empty_runs):
    at = open_page("pages/train.py", state=dataset_state(digits_dir))
    at.select_slider(key="train_img_size").set_value(64).run()
    at.radio(key="train_budget").set_value("1m").run()
    at.button(key="train_start").click().run()
    snap = wait_for_job(at, timeout=150)
    assert snap.state == "finished", snap.error
    assert snap.summary["auto"]["budget"] == "1m"
    assert snap.summary["message"].startswith("Auto ")  # "Auto kept the fitted head: ..." or "Auto tried ..."
    assert snap.summary["message"] in texts(at)
    kept = max(r["val_accuracy"] for r in snap.summary["auto"]["runs"])
    assert snap.summary["best_val_accuracy"] == kept
    assert len(list(empty_runs.iterdir())) == len(snap.summary["auto"]["runs"])


def test_train_failure_is_a_sentence(open_page, digits_dir, empty_runs):
    state = {**dataset_state(digits_dir), "hs_weights": "hub"}  # the hub is unreachable in tests
    at = open_page("pages/train.py", state=state)
    at.select_slider(key="train_img_size").set_value(64).run()
    at.button(key="train_start").click().run()
    snap = wait_for_job(at, timeout=60)
    assert snap.state == "failed"
    assert_clean(at)
    error = at.error[0].value.replace("\\", "")  # as it reads: the page escapes markdown in messages
    assert error.startswith("Training failed: Cannot get hub weights for 'tf_efficientnet_lite0'")


# ---------------------------------------------------------------- Evaluate, Predict, Export


@pytest.mark.parametrize("page", ["pages/evaluate.py", "pages/predict.py", "pages/export.py"])
def test_run_pages_without_a_run(open_page, empty_runs, page):
    at = open_page(page)
    assert "No trained model yet" in texts(at)
    assert not at.get("download_button")


def test_evaluate_with_a_run(open_page, finished_run, tmp_path, monkeypatch):
    # A copy of the real run whose first validation picture is a mistake, so the mistakes section always shows.
    run = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, run)
    rows = list(csv.DictReader((run / "predictions.csv").read_text().splitlines()))
    rows[0]["predicted"] = next(c for c in DIGITS if c != rows[0]["true"])
    with open(run / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setenv("HEADSTART_RUNS_DIR", str(tmp_path / "runs"))
    expected = evaluate_run(run)
    assert expected.mistakes
    at = open_page("pages/evaluate.py", state={"hs_run": str(run)})
    assert at.selectbox(key="evaluate_run").value == str(run)
    assert "backbone features from the cache" in texts(at)  # the fixture's run trains the head on cached features
    assert metric(at, "Validation accuracy") == f"{expected.accuracy:.1%}"
    assert metric(at, "Validation pictures") == str(expected.num_images)
    assert metric(at, "Macro F1") == f"{expected.macro_f1:.3f}"
    per_class = table_with(at, "support")
    assert list(per_class["class"]) == DIGITS
    assert per_class["support"].sum() == expected.num_images
    charts = at.get("plotly_chart")
    assert len(charts) == 5  # confusion, accuracy curve, reliability, the line, the confusion at the line
    assert f"It labels {round(expected.accuracy * expected.num_images)} of {expected.num_images}" in texts(at)
    assert metric(at, "Off by, after") == f"{run_summary(run)['calibration']['ece_after']:.1%}"
    assert len(at.image) == min(12, len(expected.mistakes))
    at.button(key="evaluate_open_0").click().run()  # the most confident mistake, large, with its heat map
    assert_clean(at)
    assert len(at.image) == min(12, len(expected.mistakes)) + 2


def test_evaluate_continues_training_from_a_run(open_page, finished_run, digits_dir):
    at = open_page("pages/evaluate.py", state={"hs_run": str(finished_run)})
    at.button(key="evaluate_continue").click().run()
    assert_clean(at)
    assert at.session_state["hs_weights"] == str(finished_run / "model.safetensors")
    assert at.session_state["hs_dataset"]["path"] == str(digits_dir)
    assert "3. Train" in texts(at)  # Train, set up: its next run starts from the finished run's weights


def test_evaluate_saves_the_line_that_predict_follows(open_page, finished_run, tmp_path, monkeypatch):
    run = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, run)
    monkeypatch.setenv("HEADSTART_RUNS_DIR", str(tmp_path / "runs"))
    at = open_page("pages/evaluate.py", state={"hs_run": str(run)})
    at.slider(key=f"evaluate_not_sure_{run.name}").set_value(0.9).run()
    probs = evaluate_run(run).probabilities
    answered = (probs.max(1) >= 0.9).mean()
    assert f"it answers **{answered:.0%}** of the pictures" in texts(at)
    at.button(key="evaluate_save_rule").click().run()
    assert_clean(at)
    assert json.loads((run / "operating_point.json").read_text()) == {"kind": "not_sure_below", "threshold": 0.9}
    picture = next((digits_root(run) / "three").iterdir())
    answer = Predictor.from_run(run).predict_paths([picture])[0]
    assert answer["sure"] == (answer["confidence"] >= 0.9)
    at.button(key="evaluate_clear_rule").click().run()
    assert not (run / "operating_point.json").exists()


def test_evaluate_finds_labels_that_look_wrong_and_measures_what_pretraining_bought(
    open_page, finished_run, tmp_path, monkeypatch
):
    from pages import _common

    run = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, run)
    monkeypatch.setenv("HEADSTART_RUNS_DIR", str(tmp_path / "runs"))
    at = open_page("pages/evaluate.py", state={"hs_run": str(run)})
    at.button(key="evaluate_find_mislabels").click().run()
    assert_clean(at)
    assert "look mislabelled" in texts(at) or "No picture's label looks wrong" in texts(at)
    at.button(key="evaluate_efficiency").click().run()
    assert_clean(at)
    queued = sorted(j.config.train_share for j in _common._MANAGERS[-1].jobs())
    assert queued == [0.1, 0.25, 0.5, 1.0]  # one from-scratch run per share, each a background job
    assert all(j.config.weights == "none" and j.config.freeze == "none" for j in _common._MANAGERS[-1].jobs())
    table = table_with(at, "pretrained")
    assert list(table["pictures"]) == [20, 40, 80, 160]  # the fixture's 16 training pictures per class, shared out
    assert set(table["from scratch"]) == {"queued"}
    assert at.button(key="evaluate_scratch").disabled  # already queued: one click, one job


RAW_NUMBER = re.compile(r"\b0\.\d{4,}\b|\b\d+\.\d{2,} s\b|\b0 KB\b")  # what tl_core.formatting prevents


@pytest.mark.parametrize("page", [None, "pages/train.py", "pages/evaluate.py", "pages/export.py"])
def test_numbers_read_the_same_everywhere(open_page, finished_run, page):
    at = open_page(page, state={"hs_run": str(finished_run)})
    words = texts(at) + " ".join(str(m.value) for m in at.metric)
    for frame in at.dataframe:
        words += " " + " ".join(str(v) for v in frame.value.select_dtypes("object").to_numpy().ravel())
    assert not RAW_NUMBER.findall(words)


def test_predict_with_a_run(open_page, finished_run, digits_dir):
    picture = sorted((digits_dir / "seven").glob("*.png"))[0]
    at = open_page("pages/predict.py", state={"hs_run": str(finished_run)})
    assert "Classes it knows: " + ", ".join(DIGITS) in texts(at)
    at.file_uploader(key="predict_files").set_value(
        [
            ("seven.png", picture.read_bytes(), "image/png"),
            ("broken.png", b"not a picture", "image/png"),
            ("seven.png", picture.read_bytes(), "image/png"),  # the same name twice (two folders) is fine
        ]
    ).run()
    assert_clean(at)
    from tl_core.images import open_rgb

    expected = Predictor.from_run(finished_run).predict_images([open_rgb(picture)])[0]
    shown = texts(at)
    assert f"**{expected['label']}** · {expected['confidence']:.1%} confident" in shown
    assert "'broken.png' is left out: not an image file" in shown
    assert len(at.image) == 4  # each picture and its heat map
    assert list(table_with(at, "picture")["label"]) == [expected["label"]] * 2

    at.toggle(key="predict_heat").set_value(False).run()
    assert len(at.image) == 2  # the pictures alone


def test_export_with_a_run(open_page, finished_run):
    at = open_page("pages/export.py", state={"hs_run": str(finished_run)})
    listing = table_with(at, "file")
    assert {"model.safetensors", "labels.json", "preprocessing.json", "predict.py", "README.md"} <= set(listing["file"])
    assert at.get("download_button"), "no download button"
    assert "Image classifier: " + ", ".join(DIGITS) in texts(at)


# ---------------------------------------------------------------- helpers the pages rely on


def test_uploaded_names_are_made_safe():
    from tl_core.uploads import safe_relative

    assert safe_relative("photos/cats/1.jpg") == Path("photos/cats/1.jpg")
    assert safe_relative("../../etc/passwd") == Path("etc/passwd")
    assert safe_relative("/abs/x.png") == Path("abs/x.png")
    assert safe_relative("C:\\Users\\me\\cat.png") == Path("C_/Users/me/cat.png")
    assert safe_relative("..") is None


def test_step_losses_are_thinned_for_the_live_chart():
    from tl_core.plots import downsample, loss_figure

    points = [(i, 1.0 / (i + 1)) for i in range(1, 5001)]
    xs, ys = downsample(points, 300)
    assert len(xs) == 300 and xs[-1] == 5000 and ys[-1] == pytest.approx(1 / 5001)
    figure = loss_figure(points, [], 100)
    assert len(figure.data[0].x) == 300

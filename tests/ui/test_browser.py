"""End to end in real Chromium against `streamlit run app.py`: upload a folder, train, watch the curve, predict, export.

Saves a screenshot of every page under test-output/browser/. Needs Chromium at /usr/bin/chromium (Debian's package;
Playwright cannot download its own browser here): skipped without it, except in CI (CI=true) where it must run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tl_core.samples import build_sample

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-output" / "browser"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not CHROMIUM.exists():
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("The browser test must run in CI, but there is no Chromium at /usr/bin/chromium.")
    pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port, with its own empty folders and no network."""
    base = tmp_path_factory.mktemp("browser")
    port = _free_port()
    env = {
        **os.environ,
        "HEADSTART_RUNS_DIR": str(base / "runs"),
        "HEADSTART_CACHE_DIR": str(base / "cache"),
        "HEADSTART_DATA_DIR": str(base / "data"),
        "HEADSTART_SERVER_DATA_ROOT": str(base),
        "HF_HUB_OFFLINE": "1",
        # This run takes seconds: at the defaults (2 s, 10 s) the curves would be redrawn once or not at all.
        "HEADSTART_LIVE_REFRESH_S": "1",
        "HEADSTART_CURVES_REFRESH_S": "1",
    }
    log = open(base / "streamlit.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true", f"--server.port={port}"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("streamlit did not start:\n" + (base / "streamlit.log").read_text())
        time.sleep(0.5)
    yield {"url": url, "base": base}
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        context = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
        yield context
        browser.close()


# Transitions in the live view make the browser repaint at 60 frames/s after each update, CPU that training needs.
LIVE_ANIMATIONS_JS = """() => document.getAnimations()
  .filter(a => a.effect && a.effect.target && a.effect.target.closest('.st-key-train_live')).length"""
CHARTS_DRAWN_JS = """() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
  .every(c => c.querySelector('.js-plotly-plot .main-svg .cartesianlayer'))"""


def _shot(page, name: str) -> None:
    """Screenshot of the page once every chart on it is drawn."""
    page.wait_for_function(CHARTS_DRAWN_JS, timeout=20_000)
    page.wait_for_timeout(800)  # the bars and lines inside them
    page.wait_for_function(CHARTS_DRAWN_JS, timeout=20_000)  # a live chart may have been redrawn meanwhile
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def _shot_section(page, heading: str, name: str) -> None:
    """Screenshot of the viewport with the section titled `heading` at its top."""
    page.get_by_role("heading", name=heading, exact=True).first.scroll_into_view_if_needed()
    page.get_by_role("heading", name=heading, exact=True).first.evaluate("h => h.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(600)
    _shot(page, name)


def _go(page, title: str, ready_text: str) -> None:
    page.get_by_role("link", name=title).first.click()
    page.get_by_text(ready_text).first.wait_for(timeout=60_000)


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()


ACCURACY_POINTS_JS = """() => {
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    const title = g.layout && g.layout.title && g.layout.title.text;
    if (title && title.includes('Accuracy')) return g.data && g.data[1] && g.data[1].x ? g.data[1].x.length : 0;
  }
  return -1;
}"""

LOSS_POINTS_JS = """() => {
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    const title = g.layout && g.layout.title && g.layout.title.text;
    if (title && title.includes('Loss')) return g.data && g.data[0] && g.data[0].x ? g.data[0].x.length : 0;
  }
  return -1;
}"""


def test_upload_train_watch_predict_export(server, page, tmp_path):
    images = build_sample("digits", tmp_path, per_class=15)

    page.goto(server["url"])
    page.get_by_text("Recent runs").wait_for(timeout=60_000)
    assert "CPU" in page.inner_text("body") or "GiB" in page.inner_text("body")
    _shot(page, "0-home")

    # 1. Data: upload a folder (sub-folder = class).
    _go(page, "1. Data", "Where are your pictures?")
    with page.expect_file_chooser() as chooser:
        page.get_by_text("Choose a folder").click()  # Headstart's own folder uploader
    chooser.value.set_files(str(images))
    page.get_by_text("Samples per class").wait_for(timeout=60_000)
    page.get_by_text("uploaded folder 'sample-digits-15'").first.wait_for()
    for name in ("zero", "five", "nine"):  # class folders became classes, with their counts
        page.get_by_text(f"{name} · 15 pictures").wait_for()
    _no_exception(page)
    _shot(page, "1-data")

    # 2. Model: the offline backbone is there and recommended.
    _go(page, "2. Model", "Recommended here")
    assert "Recommended here: EfficientNet-Lite0" in page.inner_text("body")
    _no_exception(page)
    _shot(page, "2-model")

    # 3. Train: fine-tune the top blocks on small images, long enough to watch the curve grow.
    _go(page, "3. Train", "How to train")
    page.get_by_text("Manual: choose how much to retrain").click()  # Auto is the default
    page.get_by_text("How much to retrain", exact=True).wait_for(timeout=60_000)
    page.get_by_role("radio", name="Fine-tune the top").click()
    page.locator('[data-testid="stMetricValue"]').first.wait_for()
    page.locator('input[type=range][aria-label="Image size (px)"]').focus()
    page.keyboard.press("Home")  # the smallest size: 64 px
    page.locator('input[type=range][aria-label="Image size (px)"][aria-valuetext="64"]').wait_for()
    page.locator('input[type=range][aria-label="Batch size"]').focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")  # batch size 8: more steps, so the curve grows in view on a fast machine too
    page.locator('input[type=range][aria-label="Batch size"][aria-valuetext="8"]').wait_for()
    epochs = page.locator('input[aria-label="Epochs"]')
    epochs.fill("8")
    epochs.press("Enter")
    page.wait_for_timeout(800)
    page.get_by_role("button", name="Start training").click()

    seen: list[int] = []
    live_animations = 0
    deadline = time.monotonic() + 240
    screenshot_taken = False
    while time.monotonic() < deadline:
        points = page.evaluate(LOSS_POINTS_JS)
        live_animations += page.evaluate(LIVE_ANIMATIONS_JS)
        if points > 0 and (not seen or points != seen[-1]):
            seen.append(points)
        if not screenshot_taken and len(seen) >= 2 and page.evaluate(ACCURACY_POINTS_JS) >= 3:
            _shot(page, "3-train-running")  # mid-run, a few epochs in: the README's picture of the Train page
            screenshot_taken = True
        if page.get_by_text("The kept model is epoch").count():
            break
        page.wait_for_timeout(500)
    else:
        _shot(page, "3-train-timeout")
        raise AssertionError(f"training did not finish; loss points seen: {seen}")
    assert len(seen) >= 2 and seen == sorted(seen), f"the loss curve did not gain points live: {seen}"
    assert live_animations == 0, f"{live_animations} CSS animations seen running in the live view"
    if not screenshot_taken:
        _shot(page, "3-train-running")
    _no_exception(page)
    final = page.get_by_text("The kept model is epoch").first.inner_text()
    assert "%" in final
    _shot(page, "3-train-finished")

    # 4. Evaluate: the verdict, then every section, each screenshotted where it is on the page.
    _go(page, "4. Evaluate", "Macro F1")
    body = page.inner_text("body")
    assert "Validation accuracy" in body and "validation pictures right" in body
    _no_exception(page)
    _shot(page, "4-evaluate")
    for heading, name in (
        ("How sure it is", "4a-evaluate-calibration"),
        ("Where to draw the line", "4b-evaluate-line"),
        ("Mistakes", "4c-evaluate-mistakes"),
    ):
        _shot_section(page, heading, name)
    if page.locator(".st-key-evaluate_open_0 button").count():
        page.locator(".st-key-evaluate_open_0 button").click()
        page.get_by_text("where the evidence for its answer was").wait_for(timeout=60_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(SHOTS / "4d-evaluate-mistake-opened.png"))
        page.keyboard.press("Escape")
        page.get_by_text("where the evidence for its answer was").wait_for(state="hidden", timeout=20_000)
    page.get_by_role("button", name="Look for mislabelled pictures").click()
    page.get_by_text("look mislabelled").or_(page.get_by_text("No picture's label looks wrong")).first.wait_for(
        timeout=120_000
    )
    _no_exception(page)
    _shot_section(page, "Labels that look wrong", "4e-evaluate-mislabels")

    # 5. Predict one new picture.
    _go(page, "5. Predict", "Classes it knows")
    with page.expect_file_chooser() as chooser:
        page.locator('[data-testid="stFileUploaderDropzone"]').first.click()
    chooser.value.set_files(str(sorted((images / "three").glob("*.png"))[0]))
    page.get_by_text("confident").first.wait_for(timeout=60_000)
    _no_exception(page)
    _shot(page, "5-predict")

    # 6. Export: download the bundle.
    _go(page, "6. Export", "Model card (README.md in the zip)")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the model").click()
    bundle = tmp_path / "bundle.zip"
    download.value.save_as(bundle)
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
    assert {"model.safetensors", "labels.json", "preprocessing.json", "predict.py"} <= names
    _no_exception(page)
    _shot(page, "6-export")

    # Last, as it queues from-scratch runs: what pretraining bought, on these pictures.
    _go(page, "4. Evaluate", "Macro F1")
    page.get_by_role("button", name="Measure accuracy against the share of pictures").click()
    page.wait_for_function(  # the pretrained points, fitted on the cached features while the scratch runs queue
        """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
          .some(g => g.layout && g.layout.title && String(g.layout.title.text).includes('against the pictures'))""",
        timeout=180_000,
    )
    page.get_by_role("heading", name="What pretraining bought", exact=True).wait_for()
    _no_exception(page)
    _shot_section(page, "What pretraining bought", "4f-evaluate-transfer")


PAGES_AND_HEADINGS = [
    ("", "Headstart"),
    ("data", "1. Data"),
    ("model", "2. Model"),
    ("train", "3. Train"),
    ("evaluate", "4. Evaluate"),
    ("predict", "5. Predict"),
    ("export", "6. Export"),
]
OVERFLOW_JS = """() => { const m = document.querySelector('[data-testid="stMain"]') || document.body;
  return m.scrollWidth - m.clientWidth; }"""


@pytest.mark.parametrize("size", [(1400, 1000), (1280, 720)], ids=["1400x1000", "1280x720"])
def test_every_page_fits_a_desktop_and_a_laptop(server, page, size):
    """After the run above: each page at a desktop's and a laptop's window, screenshotted, nothing off the side."""
    width, height = size
    page.set_viewport_size({"width": width, "height": height})
    try:
        for path, heading in PAGES_AND_HEADINGS:
            page.goto(f"{server['url']}/{path}")
            page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            _no_exception(page)
            assert page.evaluate(OVERFLOW_JS) <= 1, f"{heading} is wider than a {width}px window"
            page.screenshot(path=str(SHOTS / f"size-{width}x{height}-{path or 'home'}.png"))
    finally:
        page.set_viewport_size({"width": 1400, "height": 2000})

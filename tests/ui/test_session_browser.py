"""In real Chromium: what a person chose survives a refresh and shows in a second tab; a double click is one job.

Shares the browser test's server start-up (a fresh `streamlit run app.py` with its own folders) and skips, or fails in
CI, the same way when there is no Chromium.
"""

from __future__ import annotations

import time

from tests.ui import test_browser
from tests.ui.test_browser import CHROMIUM, LAUNCH_ARGS, sync_api

server = test_browser.server  # the same fixture: this module gets its own server

SAMPLE = "sample 'Handwritten digits (offline)' (20 per class)"


def _new_context(pw):
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
    return browser, browser.new_context(viewport={"width": 1400, "height": 1600})


def _use_sample(page, url: str) -> None:
    page.goto(f"{url}/data")
    page.get_by_text("Sample data set").first.click()
    page.get_by_role("spinbutton", name="Pictures per class").fill("20")
    page.get_by_role("spinbutton", name="Pictures per class").press("Enter")
    page.get_by_role("button", name="Use this sample").click()
    page.get_by_text("Samples per class").wait_for(timeout=60_000)


def _manual(page) -> None:
    """Auto is the default: switch to Manual, where the freeze strategy and the epochs are the person's."""
    page.get_by_role("heading", name="How to train").wait_for(timeout=60_000)
    page.get_by_text("Manual: choose how much to retrain").click()  # Auto is the default
    page.get_by_text("How much to retrain", exact=True).wait_for(timeout=60_000)


def _expect_epochs(page, value: str) -> None:
    sync_api.expect(page.get_by_role("spinbutton", name="Epochs", exact=True)).to_have_value(value, timeout=20_000)


def test_refresh_and_a_second_tab_keep_the_data_set_the_settings_and_the_job(server):
    with sync_api.sync_playwright() as pw:
        browser, context = _new_context(pw)
        page = context.new_page()
        _use_sample(page, server["url"])

        page.get_by_role("link", name="3. Train").first.click()
        _manual(page)
        page.get_by_role("radio", name="Fine-tune all").click()
        page.get_by_role("spinbutton", name="Epochs", exact=True).fill("37")
        page.get_by_role("spinbutton", name="Epochs", exact=True).press("Enter")
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Started: job").wait_for(timeout=30_000)

        page.reload()  # a refresh is a new session: the choices come back from the browser's saved state
        page.get_by_text("How much to retrain", exact=True).wait_for(timeout=60_000)
        assert f"Data: {SAMPLE}" in page.inner_text("body")
        _expect_epochs(page, "37")
        page.get_by_text("37 epochs").first.wait_for(timeout=60_000)  # the job's progress line is shown again

        second = context.new_page()  # a second tab of the same browser
        second.goto(server["url"])
        second.get_by_text("Training now").wait_for(timeout=60_000)
        second.get_by_text(f"on {SAMPLE}").first.wait_for(timeout=60_000)  # what the running job trains on
        assert SAMPLE in second.inner_text("body")  # and the data set this browser chose
        second.goto(f"{server['url']}/train")
        second.get_by_text("How much to retrain", exact=True).wait_for(timeout=60_000)
        _expect_epochs(second, "37")

        second.get_by_role("button", name="Stop").click()
        try:
            second.get_by_text("The kept model is epoch").or_(second.get_by_text("no weights were kept")).or_(
                second.get_by_text("Stopped before training began")  # still fitting the head it starts from
            ).first.wait_for(timeout=120_000)
        finally:
            second.screenshot(path=str(test_browser.SHOTS / "second-tab-stopped.png"), full_page=True)
        browser.close()


def test_a_double_click_on_start_is_one_job(server):
    runs = server["base"] / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    with sync_api.sync_playwright() as pw:
        browser, context = _new_context(pw)
        page = context.new_page()
        _use_sample(page, server["url"])
        page.get_by_role("link", name="3. Train").first.click()
        _manual(page)  # feature extraction: the head fitted in one go, the quickest run
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Start training").dblclick()
        try:
            page.get_by_text("The kept model is epoch").first.wait_for(timeout=120_000)
        finally:
            page.screenshot(path=str(test_browser.SHOTS / "double-click.png"), full_page=True)
        time.sleep(3)  # a second job, had one been queued, would start now
        new_runs = set(runs.glob("*")) - before
        assert len(new_runs) == 1, f"{len(new_runs)} runs started by one double click"
        assert page.get_by_text("Other jobs on this server (1)").count() == 1  # only the first test's job
        browser.close()


def _noise_pictures(root, per_class: int, classes=("cracked", "intact"), size: int = 16) -> int:
    """Small distinct PNGs, one folder per class; returns how many."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i:05d}.png")
    return per_class * len(classes)


def test_a_folder_of_3000_pictures_arrives_whole(server, tmp_path):
    folder = tmp_path / "scans"
    count = _noise_pictures(folder, per_class=1500)
    (folder / "intact" / ".DS_Store").write_bytes(b"litter")  # left out, as the scanner leaves it out
    with sync_api.sync_playwright() as pw:
        browser, context = _new_context(pw)
        page = context.new_page()
        page.goto(f"{server['url']}/data")
        page.get_by_text("Upload a folder").first.click()
        started = time.monotonic()
        page.locator('[data-testid="hs-folder-input"]').set_input_files(str(folder))
        page.get_by_text("Samples per class").wait_for(timeout=240_000)
        took = time.monotonic() - started
        page.screenshot(path=str(test_browser.SHOTS / "data-3000-folder.png"), full_page=True)
        body = page.inner_text("body")
        assert "uploaded folder 'scans'" in body
        pictures = page.locator('[data-testid="stMetric"]').filter(has_text="Pictures").first.inner_text()
        assert pictures.split()[-1].replace(",", "") == str(count), pictures
        assert "cracked · 1500 pictures" in body and "intact · 1500 pictures" in body
        stored = sorted((server["base"] / "data" / "uploads").glob("*/scans"))
        assert len(stored) == 1 and sum(1 for p in stored[0].rglob("*.png")) == count
        print(f"3,000 pictures uploaded and checked in {took:.1f} s")
        browser.close()

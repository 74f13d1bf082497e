"""The live page's cost, measured for real: the same training started from the Train page in Chromium (the page open
and redrawing, Streamlit serving it from the training process) and from the command line.

    python benchmarks/bench_ui_browser.py [--pairs 3]

Needs /usr/bin/chromium. Each pair runs the UI training first, reads its config.json, and runs exactly that config
with the CLI's `train` in a separate process; images/s are the runs' own `train_images_per_second`. Prints one JSON line,
with `browser_cores_busy`: Chromium's CPU seconds per second of the UI run (what the page takes from training here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tl_core.cli import config_argv  # noqa: E402
from tl_core.config import TrainConfig  # noqa: E402
from tl_core.samples import build_sample  # noqa: E402

LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def start_server(base: Path) -> tuple[subprocess.Popen, str, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "HEADSTART_RUNS_DIR": str(base / "runs-ui"),
        "HEADSTART_CACHE_DIR": str(base / "cache"),
        "HEADSTART_DATA_DIR": str(base / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true", f"--server.port={port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return process, url, env
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("streamlit did not start")


def chromium_cpu_seconds() -> float:
    """User + system CPU time of every Chromium process on this machine so far (Linux /proc)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if "chromium" not in Path(f"/proc/{pid}/comm").read_text():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def train_from_page(
    page, url: str, images: Path, runs: Path, epochs: int, leave: bool = False
) -> tuple[Path, float, float]:
    """Upload the folder, fine-tune the top blocks at 96 px, keep the page open until it ends.

    Returns the run folder, and the browser's CPU seconds and the wall seconds from Start to the end."""
    before = set(runs.glob("*")) if runs.exists() else set()
    page.goto(url)
    page.get_by_text("Recent runs").wait_for(timeout=60_000)
    page.get_by_role("link", name="1. Data").first.click()
    with page.expect_file_chooser() as chooser:
        page.get_by_text("Choose a folder").click()  # Headstart's folder uploader
    chooser.value.set_files(str(images))
    page.get_by_text("Samples per class").wait_for(timeout=120_000)
    page.get_by_role("link", name="3. Train").first.click()
    page.get_by_role("heading", name="How to train").wait_for(timeout=60_000)
    page.get_by_text("Manual: choose how much to retrain").click()  # Auto is the default
    page.get_by_text("How much to retrain", exact=True).wait_for(timeout=60_000)
    page.get_by_role("radio", name="Fine-tune the top").click()
    page.wait_for_timeout(500)
    slider = page.locator('input[type=range][aria-label="Image size (px)"]')
    slider.focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")  # 96 px
    page.locator('input[type=range][aria-label="Image size (px)"][aria-valuetext="96"]').wait_for()
    epochs_box = page.locator('input[aria-label="Epochs"]')
    epochs_box.fill(str(epochs))
    epochs_box.press("Enter")
    page.wait_for_timeout(800)
    page.get_by_role("button", name="Start training").click()
    browser_cpu, started = chromium_cpu_seconds(), time.monotonic()
    if leave:  # diagnosis: the job trains on in the server with no page watching it
        page.wait_for_timeout(1500)
        page.goto("about:blank")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:  # the page stays open and polling while the run trains
        new = [r for r in set(runs.glob("*")) - before if (r / "summary.json").exists()]
        if new:
            return new[0], chromium_cpu_seconds() - browser_cpu, time.monotonic() - started
        page.wait_for_timeout(500)
    raise RuntimeError("the training started from the page did not finish")


def train_from_cli(config: dict, runs: Path, env: dict) -> dict:
    """The same training from the command line: the page run's resolved config.json, as CLI arguments."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    same = TrainConfig(**{**{k: v for k, v in config.items() if k in fields}, "runs_dir": str(runs)})
    args = [sys.executable, "-m", "tl_core", "train", *config_argv(same), "--json"]
    done = subprocess.run(
        args, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12, help="long enough that the page's start-up cost is small")
    parser.add_argument("--leave-page", action="store_true", help="close the page once training starts")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="headstart-ui-bench-"))
    images = build_sample("digits", base / "src", per_class=30)
    server, url, env = start_server(base)
    ui_rates, cli_rates, browser_load = [], [], []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            for _ in range(args.pairs):
                run, browser_cpu, wall = train_from_page(
                    page, url, images, base / "runs-ui", args.epochs, leave=args.leave_page
                )
                browser_load.append(round(browser_cpu / wall, 3))
                summary = json.loads((run / "summary.json").read_text())
                config = json.loads((run / "config.json").read_text())
                ui_rates.append(summary["train_images_per_second"])
                cli_rates.append(train_from_cli(config, base / "runs-cli", env)["train_images_per_second"])
            browser.close()
    finally:
        server.terminate()
    ui_median, cli_median = float(np.median(ui_rates)), float(np.median(cli_rates))
    print(
        json.dumps(
            {
                "benchmark": "ui-browser",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "config": {k: config[k] for k in ("backbone", "freeze", "epochs", "batch_size")}
                | {"img_size": 96, "epochs": args.epochs},
                "ui_images_per_second": ui_rates,
                "cli_images_per_second": cli_rates,
                "ui_slowdown_percent_of_medians": round(100 * (1 - ui_median / cli_median), 1),
                "ui_slowdown_percent_per_pair": [
                    round(100 * (1 - u / c), 1) for u, c in zip(ui_rates, cli_rates, strict=True)
                ],
                "page_left_open": not args.leave_page,
                "browser_cores_busy": browser_load,
                # The app's defaults live in pages/_common.py; say only whether this run overrode them.
                "progress_refresh_seconds": os.environ.get("HEADSTART_LIVE_REFRESH_S", "app default"),
                "curves_refresh_seconds": os.environ.get("HEADSTART_CURVES_REFRESH_S", "app default"),
            }
        )
    )


if __name__ == "__main__":
    main()

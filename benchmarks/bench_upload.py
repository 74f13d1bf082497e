"""How long a folder of pictures takes to arrive through the Data page's folder uploader, in real Chromium.

    python benchmarks/bench_upload.py [--pictures 3000 20000] [--size 128]

Makes N distinct JPEG pictures (two class folders, SIZE x SIZE px, ~photo-like noise), starts `streamlit run app.py`,
picks the folder in the page, and times until the page shows the data set (every file received, written and checked
by the scanner). Prints one JSON line per size with the seconds, files/s and MB/s, and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ui_browser import LAUNCH_ARGS, start_server  # noqa: E402


def make_pictures(root: Path, count: int, size: int) -> int:
    """`count` distinct JPEGs in two class folders; returns their total bytes."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    total = 0
    for i in range(count):
        folder = root / ("defect" if i % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        small = np.clip(base.astype(int) + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(path, quality=90)
        total += path.stat().st_size
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def upload_once(count: int, size: int) -> dict:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder = base / "pictures"
        total_bytes = make_pictures(folder, count, size)
        process, url, _env = start_server(base)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=LAUNCH_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1200})
                page.goto(f"{url}/data")
                page.get_by_text("Choose a folder").wait_for(timeout=60_000)
                started = time.monotonic()
                page.locator('[data-testid="hs-folder-input"]').set_input_files(str(folder))
                page.get_by_text("Samples per class").wait_for(timeout=3_600_000)
                seconds = time.monotonic() - started
                body = page.inner_text("body")
                browser.close()
            stored = sum(1 for p in (base / "data" / "uploads").rglob("*.jpg"))
            return {
                "pictures": count,
                "px": size,
                "megabytes": round(total_bytes / 1e6, 1),
                "seconds": round(seconds, 1),
                "pictures_per_second": round(count / seconds, 1),
                "mb_per_second": round(total_bytes / 1e6 / seconds, 2),
                "stored": stored,
                "page_reports_all": f"{count // 2} pictures" in body,
                "server_peak_rss_mb": round(peak_rss_mb(process.pid)),
                "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
            }
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=int, nargs="+", default=[3000, 20000])
    parser.add_argument("--size", type=int, default=128, help="side of each picture in px")
    args = parser.parse_args()
    for count in args.pictures:
        print(json.dumps(upload_once(count, args.size)), flush=True)


if __name__ == "__main__":
    main()

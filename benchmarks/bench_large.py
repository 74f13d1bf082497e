"""Large data: time and peak memory of each stage Headstart runs on 20,000 and 50,000 real pictures.

    apt-get install dataset-fashion-mnist        # the pictures (Debian, 31 MB), see real_data.py
    python benchmarks/bench_large.py [--sizes 20000 50000] [--img-size 128] [--stages scan decode features train]
        [--work /tmp/large] [--json /tmp/large/results.json]

Each size's pictures are written once as PNG files (`real_data.fashion_mnist_pictures`), and its caches go to a fresh
HEADSTART_CACHE_DIR, so every cache is really built. Each stage runs in a fresh Python process, so its peak memory
is its own:
  scan      `data.scan_dataset`: every file read, hashed and decoded once
  decode    `cache.decoded_images` at the cache size of EfficientNet-Lite0's own 224 px (256 px squares), then at
            the cache size of `--img-size` (the one the next stages read)
  features  `features.pretrained_features` with the offline Lite0 weights at `--img-size` (its decoded cache is hit)
  train     one fitted-head run (`training.train`, freeze all), which hits both caches
Peak RSS is `ru_maxrss` (every page the process touched, the pages of a memory-mapped file included); peak anon is the
largest RssAnon sampled every 20 ms (the process's own memory, which the kernel cannot drop). Prints a markdown
table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BACKBONE = "tf_efficientnet_lite0"
STAGES = ("scan", "decode", "features", "train")


class AnonPeak:
    """The largest RssAnon of this process, sampled on a thread (the kernel keeps a peak of the total only)."""

    def __init__(self, every: float = 0.02) -> None:
        self.peak, self._every, self._done = 0, every, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.now())
            self._done.wait(self._every)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, self.now())


def _spec(img_size: int, n_classes: int):
    from tl_core.backbones import create_backbone
    from tl_core.preprocess import InputSpec

    backbone = create_backbone(BACKBONE, n_classes, "offline", 0, img_size)
    return backbone, InputSpec.from_data_config(backbone.data_config, img_size)


def run_stage(stage: str, data: Path, work: Path, img_size: int) -> dict:
    """One stage, in this process; what it did (pictures, sizes) goes into the result."""
    import numpy as np
    import torch

    from tl_core import cache
    from tl_core.data import scan_dataset

    manifest_file = work / "manifest.pkl"
    if stage == "scan":
        manifest = scan_dataset(data)
        manifest_file.write_bytes(pickle.dumps(manifest))
        return {"pictures": len(manifest.samples), "skipped": len(manifest.skipped)}
    manifest = pickle.loads(manifest_file.read_bytes())
    n = len(manifest.samples)
    if stage.startswith("decode"):
        _, spec = _spec(int(stage.split("@")[1]), len(manifest.class_names))
        images = cache.decoded_images(manifest, spec.cache_size)
        return {"pictures": n, "cache_size": spec.cache_size, "in_memory": not isinstance(images, np.memmap)}
    if stage == "features":
        from tl_core.features import pretrained_features

        backbone, spec = _spec(img_size, len(manifest.class_names))
        torch.set_num_threads(os.cpu_count() or 2)
        features, hit = pretrained_features(manifest, BACKBONE, backbone, spec, torch.device("cpu"))
        return {"pictures": n, "features": list(features.shape), "cache_hit": hit}
    if stage == "train":
        from tl_core.config import TrainConfig
        from tl_core.training import train

        config = TrainConfig(
            data_dir=str(data),
            backbone=BACKBONE,
            weights="offline",
            freeze="all",
            img_size=img_size,
            tta="off",
            runs_dir=str(work / "runs"),
        )
        summary = train(config, manifest=manifest)
        return {"pictures": n, "val_accuracy": summary["val_accuracy"], "status": summary["status"]}
    raise ValueError(f"Unknown stage '{stage}'; the stages are {', '.join(STAGES)}.")


def child(stage: str, data: Path, work: Path, img_size: int) -> None:
    import tl_core.features  # noqa: F401 - the libraries' own memory (torch, timm) is the baseline, not the stage's
    import tl_core.training  # noqa: F401

    start_rss = AnonPeak.now()
    sampler = AnonPeak()
    started = time.perf_counter()
    result = run_stage(stage, data, work, img_size)
    result.update(
        stage=stage,
        seconds=round(time.perf_counter() - started, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        peak_anon_mb=round(sampler.stop() / 2**20),
        start_anon_mb=round(start_rss / 2**20),
    )
    print("RESULT " + json.dumps(result), flush=True)


def _disk_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20 if folder.exists() else 0.0


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def bench_size(total: int, work_root: Path, img_size: int, stages: list[str]) -> dict:
    from real_data import fashion_mnist_pictures

    name = f"{total // 1000}k" if total % 1000 == 0 else str(total)
    data = fashion_mnist_pictures(work_root / f"fm{name}", total)
    work = work_root / f"work{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "HEADSTART_CACHE_DIR": str(work / "cache"), "PYTHONPATH": str(ROOT)}
    steps = []
    for stage in stages:
        if stage == "decode":
            steps += ["decode@224", f"decode@{img_size}"] if img_size != 224 else ["decode@224"]
        else:
            steps.append(stage)
    rows, load_before = [], _load()
    for step in steps:
        before = {name: _disk_mb(work / "cache" / name) for name in ("decoded", "features")}
        out = subprocess.run(
            [sys.executable, __file__, "--child", step, "--data", str(data), "--work", str(work)]
            + ["--img-size", str(img_size)],
            env=env,
            capture_output=True,
            text=True,
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            raise SystemExit(f"Stage {step} failed:\n{out.stderr[-3000:]}")
        row = json.loads(lines[-1][len("RESULT ") :])
        row["cache_mb"] = round(sum(_disk_mb(work / "cache" / k) - v for k, v in before.items()))
        row["pictures_per_s"] = round(row["pictures"] / max(row["seconds"], 1e-9))
        rows.append(row)
        print(f"  {total:,} {step}: {row}", flush=True)
    return {"pictures": total, "img_size": img_size, "load_before": load_before, "load_after": _load(), "stages": rows}


def markdown(result: dict) -> str:
    lines = [
        f"**{result['pictures']:,} pictures** (load average before / after: {result['load_before']} → "
        f"{result['load_after']})",
        "",
        "| stage | wall time | pictures/s | peak RSS | peak anon (own) | anon after imports | written to the cache |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["stages"]:
        lines.append(
            f"| {row['stage']} | {row['seconds']:.1f} s | {row['pictures_per_s']:,} | {row['peak_rss_mb']:,} MB | "
            f"{row['peak_anon_mb']:,} MB | {row['start_anon_mb']:,} MB | {row['cache_mb']:,} MB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000])
    parser.add_argument("--img-size", type=int, default=128, help="input size of the features and train stages")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--work", type=Path, default=Path("/tmp/large"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.work, args.img_size)
        return
    results = []
    for total in args.sizes:
        results.append(bench_size(total, args.work, args.img_size, args.stages))
        print("\n" + markdown(results[-1]) + "\n", flush=True)
    path = args.json or args.work / "results.json"
    path.write_text(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()

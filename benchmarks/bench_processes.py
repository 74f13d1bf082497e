"""One process against several (DDP under torchrun) on the same run: speed, wall time and accuracy.

    python benchmarks/real_data.py /tmp/realdata
    python benchmarks/bench_processes.py /tmp/realdata/elpv --per-class 150 --processes 1 2

Each run is the command line a person would type (`python -m tl_core train ... --processes N --json`), so both pay
their start: torchrun's rendezvous and every process's imports are in the wall time. The caches are built by a
first run that is not timed, so every timed run hits them. Prints a markdown table and one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_trust import flipped_copy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(data: Path, runs: Path, processes: int, args) -> dict:
    command = [sys.executable, "-m", "tl_core", "train", str(data), "--weights", "offline", "--json"]
    command += ["--freeze", str(args.freeze), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    command += ["--early-stopping", "0", "--device", args.device, "--processes", str(processes)]
    command += ["--runs-dir", str(runs)] + (["--img-size", str(args.img_size)] if args.img_size else [])
    tick = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - tick
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "processes": processes,
        "wall_seconds": round(wall, 1),
        "step_seconds": summary["step_seconds"],
        "train_images_per_second": summary["train_images_per_second"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "val_loss": round(summary["val_loss"], 4),
        "num_train": summary["num_train"],
        "num_val": summary["num_val"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--freeze", default="5")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEADSTART_CACHE_DIR"] = str(Path(tmp) / "cache")
        data, _ = flipped_copy(args.data_dir, Path(tmp) / "data", args.per_class, 0.0, seed=0)
        run(data, Path(tmp) / "warm", 1, argparse.Namespace(**{**vars(args), "epochs": 1}))  # builds the caches
        rows = [run(data, Path(tmp) / f"runs-{n}", n, args) for n in args.processes]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.data_dir.name}, {args}")
    print("| processes | wall time | time in steps | training pictures/s | best val accuracy | val loss |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['processes']} | {r['wall_seconds']} s | {r['step_seconds']} s | {r['train_images_per_second']} "
            f"| {r['best_val_accuracy']:.1%} | {r['val_loss']} |"
        )
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()

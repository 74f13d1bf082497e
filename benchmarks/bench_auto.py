"""Auto at each time budget against the fixed strategies at the app's defaults, on the same pictures and split.

    python benchmarks/bench_auto.py DATA_DIR [--per-class 150] [--budgets 1m 10m] [--fixed quick top all] [--img-size N]

`quick`: the Quick model (backbone frozen, the fitted head); `top`: Fine-tune the top (the last third of the blocks,
10 epochs); `all`: Fine-tune all (10 epochs); `scratch`: Fine-tune all from random weights, same epochs. Each is one
`run_strategy` call, as the Train page's Start button makes it (EfficientNet-Lite0, offline weights, its own 224 px).
Prints one JSON line per run: validation accuracy (best epoch), wall time, and for Auto what it chose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_probe import BACKBONE, subset  # noqa: E402

from tl_core.auto import run_strategy  # noqa: E402
from tl_core.config import TrainConfig  # noqa: E402
from tl_core.data import scan_dataset  # noqa: E402
from tl_core.freezing import backbone_structure, top_third_frozen  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--budgets", nargs="*", default=["1m", "10m"])
    parser.add_argument("--fixed", nargs="*", default=["quick", "top", "all"])
    parser.add_argument(
        "--img-size", type=int, default=None, help="fix every run's image size (default: as each run chooses)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HEADSTART_CACHE_DIR", tempfile.mkdtemp(prefix="bench-auto-cache-"))
    manifest = subset(scan_dataset(args.data, seed=0), args.per_class)
    total = backbone_structure(BACKBONE, len(manifest.class_names)).total_blocks
    fixed = {
        "quick": dict(freeze="all"),
        "top": dict(freeze=str(top_third_frozen(total))),
        "all": dict(freeze="none"),
        "scratch": dict(freeze="none", weights="none"),
    }
    runs = [(f"auto {b}", dict(strategy="auto", budget=b)) for b in args.budgets]
    runs += [(name, fixed[name]) for name in args.fixed]
    for name, options in runs:
        with tempfile.TemporaryDirectory() as runs_dir:
            config = TrainConfig(
                args.data,
                **{
                    "backbone": BACKBONE,
                    "weights": "offline",
                    "runs_dir": runs_dir,
                    "img_size": args.img_size,
                    **options,
                },
            )
            tick = time.perf_counter()
            summary = run_strategy(config, manifest=manifest)
            row = {
                "data": Path(args.data).name,
                "train_per_class": args.per_class or "all",
                "run": name,
                "val_accuracy": summary["best_val_accuracy"],
                "wall_seconds": round(time.perf_counter() - tick, 1),
                "epochs_run": summary["epochs_run"],
                "frozen_blocks": f"{summary['frozen_blocks']}/{summary['total_blocks']}",
            }
            if summary.get("tta"):
                row["mirror_tta"] = summary["tta"]
            if "auto" in summary:
                row["auto"] = summary["auto"]["sentence"]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

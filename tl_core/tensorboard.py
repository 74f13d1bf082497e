"""A run's curves as TensorBoard event files (`tensorboard/` in the run folder), written from metrics.jsonl, so the
people a prototype grows into can open Headstart's runs with the tool they already use:
`tensorboard --logdir runs/`. Written when a run ends, and for any older run by `python -m tl_core tensorboard`."""

from __future__ import annotations

import shutil
from pathlib import Path

from tl_core.runs import read_json, read_metrics

FOLDER = "tensorboard"


def write_events(run_dir: str | Path) -> Path:
    """(Re)write the run's event files from its metrics.jsonl; their folder."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(run_dir)
    target = run_dir / FOLDER
    shutil.rmtree(target, ignore_errors=True)  # a resumed run rewrites its curves whole
    events = read_metrics(run_dir)
    with SummaryWriter(log_dir=str(target)) as writer:
        for e in events:
            if e.get("event") == "step":
                writer.add_scalar("train/loss_per_step", e["loss"], e["step"])
                writer.add_scalar("train/learning_rate", e["lr"], e["step"])
            elif e.get("event") == "epoch":
                for name in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
                    split, measure = name.split("_", 1)
                    writer.add_scalar(f"{measure}/{split}", e[name], e["epoch"])
        summary = read_json(run_dir / "summary.json", {}) or {}
        config = read_json(run_dir / "config.json", {}) or {}
        settings = {k: v for k, v in config.items() if isinstance(v, int | float | str | bool)}
        results = {
            f"result/{k}": summary[k]
            for k in ("best_val_accuracy", "val_loss", "test_accuracy", "train_seconds")
            if isinstance(summary.get(k), int | float)
        }
        if results:
            writer.add_hparams(settings, results, run_name=".")
    return target

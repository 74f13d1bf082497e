"""Auto: the best model the pictures and this machine allow within a time budget, and one sentence on how it chose.

First the fitted head on the frozen backbone (seconds, and always a finished model). Then, from the budget left, the
measured training speed of the backbone on this device (`tl_core.speed`) and the number of pictures, whether to
fine-tune, how deep (the last third of the blocks, or all of them) and for how many epochs. The fine-tuning starts
from the fitted head (LP-FT). Of the two models, the one with the better validation accuracy is kept; both runs stay
on disk.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tl_core.config import TrainConfig
from tl_core.data import DatasetManifest, scan_dataset
from tl_core.events import Message
from tl_core.freezing import top_third_frozen
from tl_core.speed import measure_speed, remember_speed, remembered_speeds
from tl_core.training import EventSink, train

BUDGETS = {"1m": "about 1 minute", "10m": "about 10 minutes", "best": "the best I can get"}
BEST_EPOCHS = 30  # "the best I can get": fine-tuning as long as it keeps improving (early stopping), at most this
MIN_EPOCHS = 3  # fewer epochs of fine-tuning than this rarely beat the fitted head
# From this many training pictures per class every block may adapt; below it the last third does. At 150 solar-cell
# scans per class, fine-tuning every block reached 86.1% against 87.0% for the last third, in twice the time.
ALL_BLOCKS_PER_CLASS = 500
TOP_COST = 0.7  # an epoch with the last third of the blocks training, against one with every block (backward is cut)
HEADROOM = 0.85  # the share of the budget left that fine-tuning plans to use (evaluation, saving, a slower machine)
# Auto trains at the backbone's own image size, whatever the pictures' size: on 28 px Fashion-MNIST, fine-tuning at
# 128 px (six times cheaper an epoch) reached 83.8% in 10 minutes against 85.2% at 224 px (docs/BENCHMARKS.md).


def parse_budget(text: str | None) -> float | None:
    """'90s', '10m', '1.5h', '600' -> seconds; 'best' or None -> no limit. ValueError with a sentence otherwise."""
    if text is None or str(text).strip().lower() in ("", "best", "none"):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"A time budget is like 90s, 10m or 1h (or 'best' for no limit), not '{text}'.")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


@dataclass(frozen=True)
class FineTunePlan:
    freeze: str  # the TrainConfig freeze value
    epochs: int
    reason: str


def plan_fine_tune(
    num_train: int,
    num_val: int,
    num_classes: int,
    total_blocks: int,
    probe_accuracy: float,
    seconds_left: float | None,
    training_images_per_second: float,
    inference_images_per_second: float,
) -> FineTunePlan | None:
    """How to fine-tune in the time left (every block from enough pictures per class, else, or if every block does
    not fit, the last third), or None to keep the fitted head."""
    if probe_accuracy >= 0.995:
        return None
    per_class = num_train / max(num_classes, 1)
    top = str(top_third_frozen(total_blocks))
    depths = (["none"] if per_class >= ALL_BLOCKS_PER_CLASS else []) + [top]
    for depth in depths:
        cost = 1.0 if depth == "none" else TOP_COST
        epoch_seconds = num_train / max(training_images_per_second, 1e-9) * cost + num_val / max(
            inference_images_per_second, 1e-9
        )
        affordable = BEST_EPOCHS if seconds_left is None else math.floor(seconds_left * HEADROOM / epoch_seconds)
        if affordable >= MIN_EPOCHS:
            epochs = min(affordable, BEST_EPOCHS)
            what = (
                f"every block ({per_class:.0f} pictures per class)"
                if depth == "none"
                else "the last third of the blocks"
            )
            return FineTunePlan(
                depth, epochs, f"{what} fine-tuned for {epochs} epochs (about {epoch_seconds:.0f} s each here)"
            )
    return None


def train_auto(
    config: TrainConfig,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    manifest: DatasetManifest | None = None,
) -> dict:
    """The Auto strategy: the fitted head, then fine-tuning if the budget allows; the better model's summary."""
    started = time.monotonic()
    budget = parse_budget(config.budget)
    stop = should_stop or (lambda: False)
    if manifest is None:
        manifest = scan_dataset(
            config.data_dir, val_fraction=config.val_split, test_fraction=config.test_split, seed=config.seed
        )
    head = replace(config, strategy="manual", freeze="all", augment="off", feature_cache=True, probe=True)
    probe = train(head, on_event, stop, manifest)
    if probe["status"] != "finished":
        return probe
    seconds_left = None if budget is None else budget - (time.monotonic() - started)
    own_size = probe["input"]["img_size"]
    size = config.img_size or own_size
    speed = _speed(config, size, own_size)
    plan = plan_fine_tune(
        probe["num_train"],
        probe["num_val"],
        probe["num_classes"],
        probe["total_blocks"],
        probe["best_val_accuracy"] or 0.0,
        seconds_left,
        speed["training_images_per_second"],
        speed["inference_images_per_second"],
    )
    if plan is None:
        why = (
            "it already labels almost every validation picture right"
            if (probe["best_val_accuracy"] or 0) >= 0.995
            else f"fine-tuning here trains about {speed['training_images_per_second']:.0f} pictures/s, so the "
            f"budget ({_budget_words(config.budget)}) leaves no room for {MIN_EPOCHS} epochs of it"
        )
        return _kept(probe, [probe], config, f"Auto kept the fitted head: {why}.")
    if on_event:
        on_event(Message(f"Auto: the fitted head reached {probe['best_val_accuracy']:.1%}; now {plan.reason}."))
    deadline = None if budget is None else started + budget * 1.2  # a slower epoch than measured must not run over
    fine = replace(config, strategy="manual", freeze=plan.freeze, epochs=plan.epochs, probe=True, img_size=size)
    tuned = train(fine, on_event, lambda: stop() or (deadline is not None and time.monotonic() > deadline), manifest)
    better = tuned if (tuned["best_val_accuracy"] or 0) > (probe["best_val_accuracy"] or 0) else probe
    verdict = (
        f"Auto tried the fitted head ({probe['best_val_accuracy']:.1%}) and then {plan.reason}: "
        f"{(tuned['best_val_accuracy'] or 0):.1%}. It kept the "
        + ("fine-tuned model." if better is tuned else "fitted head, the better of the two.")
    )
    return _kept(better, [probe, tuned], config, verdict)


def _kept(summary: dict, runs: list[dict], config: TrainConfig, sentence: str) -> dict:
    """The kept run's summary, with what Auto did, written back into that run's summary.json."""
    summary = {
        **summary,
        "message": f"{sentence} {summary.get('message', '')}".strip(),
        "auto": {
            "budget": config.budget or "best",
            "sentence": sentence,
            "runs": [
                {"run_dir": r["run_dir"], "val_accuracy": r["best_val_accuracy"], "freeze": r.get("frozen_blocks")}
                for r in runs
            ],  # fmt: skip
        },
    }
    Path(summary["run_dir"], "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _speed(config: TrainConfig, img_size: int, own_size: int) -> dict:
    """This backbone's measured speed on this device at `img_size` (measured now if it never was). Only speeds at
    the backbone's own size are remembered: those are the ones the Model page shows."""
    known = remembered_speeds().get(config.backbone)
    if known and known["img_size"] == img_size:
        return known
    measured = measure_speed(config.backbone, config.device, img_size=img_size)
    if img_size == own_size:
        remember_speed(measured)
    return measured


def _budget_words(budget: str | None) -> str:
    return BUDGETS.get(budget or "best", budget or "no limit")


def run_strategy(
    config: TrainConfig,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    manifest: DatasetManifest | None = None,
) -> dict:
    """Train as `config.strategy` says (the job queue and the command line both start runs here)."""
    return {"manual": train, "auto": train_auto}[config.strategy](config, on_event, should_stop, manifest)

"""The training loop: synchronous, seeded, readable top to bottom.

train(config) scans the data, builds the backbone with its weights, freezes the first K blocks, decodes every image
once, and then fine-tunes with AdamW, warmup + cosine, label smoothing and early stopping, keeping the best weights.
When the whole backbone is frozen and augmentation is off, the backbone's features are computed once (and cached on
disk) and only the head trains on them: the same result, without paying the backbone's forward pass every epoch.
Progress goes out as typed events (tl_core.events) to `on_event` and to the run folder's metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tl_core import cache, calibration, distributed, limits
from tl_core.backbones import Backbone, create_backbone
from tl_core.config import TrainConfig
from tl_core.data import DatasetManifest, keep_training_share, scan_dataset
from tl_core.decision import calibrated_probabilities
from tl_core.devices import autocast, describe_device, on_device_layout
from tl_core.distributed import World
from tl_core.errors import DataError, RunNotFoundError, user_message
from tl_core.events import Created, Ended, EpochEnd, Event, FeatureCache, Message, Progress, Schedule, Started, Step
from tl_core.features import pretrained_features
from tl_core.freezing import FreezePlan, apply_freeze, layer_lr_scales, set_train_mode
from tl_core.images import UnusableImage, load_square, map_with_progress
from tl_core.preprocess import InputSpec, to_model_input
from tl_core.probe import Probe, fit_probe
from tl_core.runs import RunWriter, build_summary, read_json, read_metrics, summary_from_log

__all__ = ["TrainConfig", "train", "planned_lrs"]

EventSink = Callable[[Event], None]
SPLITS = ("train", "val", "test")
CHECKPOINT = "checkpoint.pt"


class StopRequested(Exception):
    """Raised inside the loop when the job was asked to stop."""


@dataclass
class _Run:
    """The run folder and the listeners: where every event goes, and whether someone asked to stop."""

    writer: RunWriter
    on_event: EventSink | None
    should_stop: Callable[[], bool]
    world: World = field(default_factory=World)  # the processes training together (rank 0 of 1 when alone)
    start: dict = field(default_factory=dict)  # the Started event's fields, once known

    def emit(self, event: Event) -> None:
        self.writer.log(event.record())
        if self.on_event:
            self.on_event(event)

    def check_stop(self) -> None:
        """In work this process does on its own (scanning, building caches, the wrap-up on rank 0)."""
        if self.should_stop():
            raise StopRequested

    def check_stop_together(self) -> None:
        """At a point every process reaches at the same step: a stop asked of rank 0 ends them all there."""
        if self.world.agree(self.should_stop()):
            raise StopRequested

    def check_stop_alone(self) -> None:
        """In a pass the processes share (validation): only when training alone, or one would wait for the others
        forever; with several, the next step's `check_stop_together` stops them."""
        if not self.world.active:
            self.check_stop()

    def progress(self, stage: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            self.check_stop()
            self.emit(Progress(stage, done, total))

        return report


@dataclass
class _Setup:
    """What the loop needs: the settings as resolved, the model, how to get a batch's logits, the rows of each split."""

    config: TrainConfig
    model: nn.Module
    trained_module: nn.Module  # the head alone when it trains on cached features, else the whole model
    plan: FreezePlan
    batch_logits: Callable[[np.ndarray, bool], torch.Tensor]  # (cache rows, training?) -> logits
    rows: dict[str, np.ndarray]  # split -> rows of the decoded-image (or feature) cache
    labels: dict[str, torch.Tensor]
    manifest: DatasetManifest
    device: torch.device
    spec: InputSpec
    generator: torch.Generator  # the augmentation's random draws
    world: World = field(default_factory=World)
    probe: Probe | None = None  # the fitted head the training starts from (or, backbone frozen, is)
    mirror: bool = False  # predictions average each picture's with its mirror image's (test-time augmentation)


@dataclass
class _Loop:
    """The optimiser and the counters that carry from step to step."""

    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    total_images: int
    warmup_images: float
    batch_size: int  # the global batch: the pictures of one step over every process
    images_seen: int = 0
    train_time: float = 0.0
    step: int = 0
    lr: float = 0.0  # the base learning rate of the last step (groups scale it by their lr_scale)

    @property
    def images_per_second(self) -> float:
        return self.images_seen / max(self.train_time, 1e-9)


def train(
    config: TrainConfig,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    manifest: DatasetManifest | None = None,
) -> dict:
    """Run one training to its end and return the summary (also written to the run folder).

    `manifest`, when given, is the data set as already scanned (the web app scanned it to show it): not read again.
    Started by torchrun with other processes, this one trains its share of every step (tl_core.distributed).
    """
    world = distributed.join(config.device)
    if world.active and config.resume:
        raise ValueError(
            f"A run that was cut off continues in one process: python -m tl_core resume {config.resume} (the steps are "
            "the same whatever the number of processes)."
        )
    if not world.main:
        return _train_as_helper(config, world)
    limits.check_free_space(config.runs_dir, what="Resuming the run" if config.resume else "A new run")
    writer = RunWriter.reopen(config.resume) if config.resume else RunWriter(config.runs_dir, config.backbone)
    run = _Run(writer, on_event, should_stop or (lambda: False), world)
    started = time.monotonic()
    run.emit(Created(str(run.writer.run_dir)))
    try:
        summary = _fit(_prepare(config, run, manifest), run)
    except StopRequested:
        summary = build_summary(run.writer.run_dir, "stopped", run.start, [], "Stopped before training began.")
    except Exception as exc:
        said = distributed.lost_peer_message(exc, world) or user_message(exc)
        failed = summary_from_log(run.writer.run_dir, "failed", said, asdict(config))
        with contextlib.suppress(OSError):  # a full disk fails this too; the reason on its way up is the one to tell
            _finish(run, config, failed, started)
        if said != user_message(exc):
            raise distributed.PeerLost(said) from exc
        raise
    return _finish(run, config, summary, started)


class _QuietWriter:
    """A helper process's stand-in for the run folder, which rank 0 alone writes."""

    run_dir = None
    opened_at = 0.0

    def log(self, event: dict) -> None: ...
    def write_json(self, name: str, payload) -> None: ...
    def save_weights(self, model: nn.Module) -> None: ...
    def save_checkpoint(self, state: dict) -> None: ...
    def write_predictions(self, *args, **kwargs) -> None: ...
    def close(self) -> None: ...


def _train_as_helper(config: TrainConfig, world: World) -> dict:
    """A process other than rank 0: it trains its share of every step, and writes and says nothing."""
    run = _Run(_QuietWriter(), None, lambda: False, world)  # type: ignore[arg-type]
    try:
        return _fit(_prepare(config, run, None), run)
    except StopRequested:
        return {"status": "stopped", "rank": world.rank}
    except Exception as exc:
        if said := distributed.lost_peer_message(exc, world):  # a consequence: the failure torchrun saw first is told
            raise distributed.PeerLost(said) from exc
        raise


def _finish(run: _Run, config: TrainConfig, summary: dict, started: float) -> dict:
    """Write the summary, tell the listeners, release the run folder (whatever else fails)."""
    try:
        if not (run.writer.run_dir / "config.json").exists():  # it ended before the settings were resolved
            run.writer.write_json("config.json", config.to_dict())
        summary["train_seconds"] = round(time.monotonic() - started, 2)  # whole run, caches included
        run.writer.write_json("summary.json", summary)
        if summary["status"] in ("finished", "stopped"):  # ended normally, and said so: nothing left to resume
            (run.writer.run_dir / CHECKPOINT).unlink(missing_ok=True)
        _write_tensorboard(run)
        run.emit(Ended(summary))
    finally:
        run.writer.close()
    return summary


def _write_tensorboard(run: _Run) -> None:
    """The curves as TensorBoard event files beside metrics.jsonl; a run never fails for want of them."""
    from tl_core.tensorboard import write_events

    try:
        write_events(run.writer.run_dir)
    except Exception as exc:  # noqa: BLE001 - an extra copy of the curves: say so, keep the run
        run.emit(Message(f"The TensorBoard copy of the curves could not be written ({user_message(exc)})."))


# ---------------------------------------------------------------- preparation


def _prepare(config: TrainConfig, run: _Run, manifest: DatasetManifest | None) -> _Setup:
    """Data, backbone, freezing, caches: everything the loop needs, with the run folder's first files written."""
    world, device = run.world, run.world.device
    torch.manual_seed(config.seed)  # the same new head in every process
    if manifest is None:  # scanned once, by rank 0, and sent to the others
        manifest = world.from_main(
            lambda: scan_dataset(
                config.data_dir,
                val_fraction=config.val_split,
                test_fraction=config.test_split,
                seed=config.seed,
                on_progress=run.progress("scan"),
            ),
            StopRequested,
        )
    manifest = keep_training_share(manifest, config.train_share, config.seed)
    _check_splits(manifest)
    if config.resume:
        _check_same_pictures(run.writer.run_dir, manifest)
    run.writer.write_json("split.json", manifest.split_table())
    run.writer.write_json("labels.json", manifest.class_names)

    backbone = create_backbone(config.backbone, len(manifest.class_names), config.weights, config.seed, config.img_size)
    plan = apply_freeze(backbone.model, config.freeze)
    spec = InputSpec.from_data_config(backbone.data_config, config.img_size)
    config = config.resolved(plan, spec.img_size)
    run.writer.write_json(
        "config.json",
        {
            **config.to_dict(),
            "num_classes": len(manifest.class_names),
            "input": spec.to_dict(),
            "weights_used": backbone.weights,
        },
    )
    _announce(run, config, backbone, plan, spec, manifest, device)

    model = backbone.model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    rows = {split: cache.rows_for(manifest, manifest.split(split)) for split in SPLITS}
    labels = {split: torch.tensor([s.label for s in manifest.split(split)], dtype=torch.long) for split in SPLITS}
    with world.main_first(StopRequested):  # built on disk by one process per machine, then read by the others
        features = (
            _backbone_features(config, run, backbone, spec, manifest, device)
            if config.probe or config.feature_cache
            else None
        )
        images = (
            None
            if config.feature_cache
            else cache.decoded_images(manifest, spec.cache_size, on_progress=run.progress("decode"))
        )
    probe = (  # fitted once, by rank 0 (a stop while it fits must not leave the others waiting), used by all
        world.from_main(lambda: _fit_probe(config, run, model, features[rows["train"]], labels["train"]), StopRequested)
        if config.probe
        else None
    )
    if probe is not None:
        _use_probe(model, probe)
    generator = torch.Generator().manual_seed(config.seed + world.rank)  # each process its own crops and flips
    if config.feature_cache:
        trained_module, batch_logits = _head_on_features(model, features, device, world)
    else:
        trained_module, batch_logits = _whole_model(config, model, images, spec, device, generator, world)
    if world.active:  # the same model everywhere (DDP made sure); dropout's draws differ by process, as the pictures
        torch.manual_seed(config.seed + world.rank)
    return _Setup(
        config, model, trained_module, plan, batch_logits, rows, labels, manifest, device, spec, generator, world, probe
    )


def _check_same_pictures(run_dir: Path, manifest: DatasetManifest) -> None:
    """A run resumes only on the pictures it started with, split as they were."""
    before = read_json(run_dir / "split.json", {}) or {}
    now = json.loads(json.dumps(manifest.split_table()))
    if before.get("files") != now.get("files"):
        changed = {(f["path"], f["split"]) for f in before.get("files", [])} ^ {
            (f["path"], f["split"]) for f in now.get("files", [])
        }
        raise DataError(
            f"The pictures in '{manifest.root}' changed since run '{run_dir.name}' started ({len(changed)} "
            "differ), so it cannot continue where it stopped. Start a new run on them instead."
        )


def _check_splits(manifest: DatasetManifest) -> None:
    if not manifest.split("train"):
        raise DataError("No usable picture is left for training. Add images to the class folders (or to train/).")
    if not manifest.split("val"):
        raise DataError(
            "No picture is left for validation, so accuracy cannot be measured. Add images (at least 2 per class) "
            "or, with your own train/ and val/ folders, put some in val/."
        )


def _announce(run: _Run, config: TrainConfig, backbone: Backbone, plan, spec, manifest, device) -> None:
    """The Started event: what is about to train, on what (also the summary's first fields)."""
    started = Started(
        backbone=config.backbone,
        weights=backbone.weights,
        device=str(device),
        num_classes=len(manifest.class_names),
        class_names=manifest.class_names,
        num_train=len(manifest.split("train")),
        num_val=len(manifest.split("val")),
        frozen_blocks=plan.frozen_blocks,
        total_blocks=plan.total_blocks,
        trainable_params=plan.trainable_params,
        total_params=plan.total_params,
        device_name=describe_device(device),
        feature_cache=config.feature_cache,
        augment=config.augment == "on",
        input=spec.to_dict(),
    )
    run.start = asdict(started)
    run.emit(started)


def _backbone_features(config, run, backbone, spec, manifest, device) -> torch.Tensor:
    features, hit = pretrained_features(manifest, config.backbone, backbone, spec, device, run.progress)
    run.emit(FeatureCache(hit, int(features.shape[1])))
    return features


def _fit_probe(config, run, model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> Probe | None:
    """The head fitted to its optimum on the training pictures' features (None if the head is not linear)."""
    head = model.get_classifier()
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if not isinstance(head, nn.Linear) or head.in_features != features.shape[1] or head.out_features < num_classes:
        run.emit(Message("This backbone's head is not a plain linear layer: it starts from zero instead of a probe."))
        return None
    weights = _class_weights(labels, head.out_features) if config.class_balanced else None
    probe = fit_probe(
        features, labels, head.out_features, class_weights=weights, seed=config.seed, on_progress=run.progress("probe")
    )
    run.emit(Message(probe.sentence()))
    return probe


def _use_probe(model: nn.Module, probe: Probe) -> None:
    """The fitted head written into the model's classifier."""
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.copy_(probe.weight.to(head.weight.device))
        head.bias.copy_(probe.bias.to(head.bias.device))


def _head_on_features(model: nn.Module, features: torch.Tensor, device, world: World):
    """The head alone, trained on the frozen backbone's cached features."""
    head = model.get_classifier()
    trainer = world.wrap(head)

    def batch_logits(batch_rows: np.ndarray, training: bool) -> torch.Tensor:
        return (trainer if training else head)(features[batch_rows].to(device, non_blocking=True))

    return head, batch_logits


def _whole_model(config, model, images: np.ndarray, spec, device, generator: torch.Generator, world: World):
    """Every picture through the model at every step, augmented when training asks for it. Training steps go
    through DDP when several processes train; validation, split between them, through the model itself (DDP's
    forward is a collective, and the processes' shares of validation differ by a batch)."""

    def compiled(module: nn.Module) -> nn.Module:
        return torch.compile(module) if config.compile and device.type == "cuda" else module

    trainer = compiled(world.wrap(model))
    forward = compiled(model) if world.active else trainer
    augment = config.augment == "on"

    def batch_logits(batch_rows: np.ndarray, training: bool) -> torch.Tensor:
        x = to_model_input(cache.to_batch(images, batch_rows, device), spec, augment and training, generator)
        return (trainer if training else forward)(on_device_layout(x, device))

    return model, batch_logits


# ---------------------------------------------------------------- the loop


def _fit(setup: _Setup, run: _Run) -> dict:
    """Epochs of shuffled batches, a validation pass after each, the best weights kept; then the summary."""
    config = setup.config
    if config.feature_cache and setup.probe is not None:
        return _fit_done_by_probe(setup, run)
    loop = _new_loop(setup, run)
    history = _resume(setup, loop, run) if config.resume else []
    status, message = "finished", ""
    done = len(history) if not _should_stop_early(history, config.early_stopping) else config.epochs
    try:
        for epoch in range(done + 1, config.epochs + 1):
            train_loss, train_accuracy = _train_epoch_shrinking_on_oom(setup, loop, run, epoch)
            val = _evaluate(setup, "val", run.check_stop_alone)
            best_so_far = max((h["val_accuracy"], -h["val_loss"]) for h in history) if history else None
            improved = best_so_far is None or (val["accuracy"], -val["loss"]) > best_so_far
            record = EpochEnd(
                epoch, config.epochs, train_loss, train_accuracy, val["loss"], val["accuracy"],
                loop.lr, round(loop.images_per_second, 2), improved,
            )  # fmt: skip
            history.append(asdict(record))
            # the checkpoint first: cut off between the two, the resume re-saves these best weights from it
            _save_checkpoint(setup, loop, history, run.writer)
            if improved:
                _keep_best(run.writer, setup, val["predictions"])
            run.emit(record)
            if _should_stop_early(history, config.early_stopping):
                message = (
                    f"Stopped early after epoch {epoch}: the validation loss had not improved for "
                    f"{config.early_stopping} epochs."
                )
                break
    except StopRequested:
        status, message = "stopped", f"Stopped on request after {len(history)} complete epoch(s)."
    if not setup.world.main:
        return {"status": status, "rank": setup.world.rank}
    processes = setup.world.size
    setup = replace(setup, world=World(device=setup.device))  # the helpers are done: the wrap-up is rank 0's alone
    extra = {
        "step_seconds": round(loop.train_time, 2),  # time in optimisation steps only
        "train_images_per_second": round(loop.images_per_second, 2),
        "batch_size": loop.batch_size,
        "feature_cache": config.feature_cache,
        "input": run.start["input"],
        "processes": processes,
    }
    return _summarise(setup, run, status, history, message, extra)


def _save_checkpoint(setup: _Setup, loop: _Loop, history: list[dict], writer: RunWriter) -> None:
    """Everything the next epoch depends on, so a run cut off resumes as if it never was."""
    writer.save_checkpoint(
        {
            "history": history,
            "model": setup.model.state_dict(),
            "optimizer": loop.optimizer.state_dict(),
            "loop": {k: getattr(loop, k) for k in ("images_seen", "train_time", "step", "batch_size", "lr")},
            "torch_rng": torch.get_rng_state(),
            "augment_rng": setup.generator.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if setup.device.type == "cuda" else None,
        }
    )


def _resume(setup: _Setup, loop: _Loop, run: _Run) -> list[dict]:
    """The epochs a cut-off run had finished, its model, optimiser and random states back as they were then."""
    path, writer = run.writer.run_dir / CHECKPOINT, run.writer
    this_attempt = _this_attempt(writer)
    if not path.exists():
        if any(e.get("event") == "epoch" for e in read_metrics(writer.run_dir)):
            raise RunNotFoundError(
                f"Run '{writer.run_dir.name}' has finished epochs but no checkpoint to go on from (it was cut off "
                "after its last epoch, while it was being wrapped up). Its best weights are kept and can be used; to "
                "train more, start a new run."
            )
        writer.trim_metrics(this_attempt)
        run.emit(Message("That run had not finished an epoch: it trains again from the start, in the same folder."))
        return []
    state = torch.load(path, map_location="cpu", weights_only=True)
    setup.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    for name, value in state["loop"].items():
        setattr(loop, name, value)
    torch.set_rng_state(state["torch_rng"])
    setup.generator.set_state(state["augment_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    history = state["history"]
    # the earlier attempt's steps up to the checkpoint stay; its epoch records are logged again, once each, and
    # everything else it logged (its start, schedule, end) gives way to this attempt's
    writer.trim_metrics(lambda e: this_attempt(e) or (e.get("event") == "step" and e["step"] <= loop.step))
    for record in history:
        run.emit(EpochEnd(**record))
    if history and history[-1]["best"]:  # cut off after the checkpoint, maybe before these weights were saved
        _keep_best(writer, setup, _evaluate(setup, "val")["predictions"])
    run.emit(Message(f"Resumed after epoch {len(history)} of {setup.config.epochs}, from its checkpoint."))
    return history


def _this_attempt(writer: RunWriter) -> Callable[[dict], bool]:
    """Whether a logged event belongs to this attempt at the run (not to the one that was cut off)."""
    return lambda e: e.get("time", 0) >= writer.opened_at and e.get("event") not in ("step", "epoch")


def _fit_done_by_probe(setup: _Setup, run: _Run) -> dict:
    """Backbone frozen: the probe's head is the trained model. One evaluation, recorded as the run's one epoch."""
    if not setup.world.main:  # nothing to share out: rank 0 measures and writes it
        return {"status": "finished", "rank": setup.world.rank}
    setup = replace(setup, world=World(device=setup.device))
    if setup.config.resume:  # a fit of seconds: done again
        run.writer.trim_metrics(_this_attempt(run.writer))
    tick = time.perf_counter()
    train, val = _evaluate(setup, "train", run.check_stop), _evaluate(setup, "val", run.check_stop)
    _keep_best(run.writer, setup, val["predictions"])
    seconds = setup.probe.seconds + time.perf_counter() - tick
    speed = round(len(setup.rows["train"]) / max(setup.probe.seconds, 1e-9), 2)
    record = EpochEnd(1, 1, train["loss"], train["accuracy"], val["loss"], val["accuracy"], 0.0, speed, True)
    run.emit(record)
    extra = {
        "step_seconds": round(seconds, 2),
        "train_images_per_second": speed,
        "batch_size": len(setup.rows["train"]),
        "feature_cache": True,
        "input": run.start["input"],
        "processes": 1,
    }
    return _summarise(setup, run, "finished", [asdict(record)], setup.probe.sentence(), extra)


def _summarise(setup: _Setup, run: _Run, status: str, history: list[dict], message: str, extra: dict) -> dict:
    """The run's summary: whether mirrored pictures help, the test pass with the kept weights (when there is a test
    split), what the probe chose."""
    if status == "finished" and history:
        mirroring, kept_val = _choose_mirroring(setup, run)
        extra.update(mirroring)
        extra.update(_calibrate(setup, run.writer, kept_val))
    elif status == "stopped" and history:  # stopped (by a person or Auto's deadline): calibrated all the same
        _load_kept(setup, run.writer)
        extra.update(_calibrate(setup, run.writer, _evaluate(setup, "val")))
    if len(setup.rows["test"]) and history:
        extra.update(_test_pass(setup, run.writer))
    if setup.probe is not None:
        extra["probe"] = setup.probe.summary()
    summary = build_summary(run.writer.run_dir, status, run.start, history, message, **extra)
    if setup.mirror:  # the figure of the model as it will predict, as Evaluate reads it from predictions.csv
        summary["best_val_accuracy"] = extra["tta"]["val_accuracy_mirrored"]
    summary["message"] = " ".join(filter(None, [message, _kept_sentence(summary)]))
    return summary


def _new_loop(setup: _Setup, run: _Run) -> _Loop:
    """Optimiser, loss and schedule; the whole learning-rate plan goes out as one event before the first step."""
    config = setup.config
    num_train = len(setup.rows["train"])
    class_weights = _class_weights(setup.labels["train"], len(setup.manifest.class_names))
    criterion = nn.CrossEntropyLoss(  # summed: a step divides by its whole batch's count (see _train_step)
        weight=class_weights.to(setup.device) if config.class_balanced else None,
        label_smoothing=config.label_smoothing,
        reduction="sum",
    )
    total_images = config.epochs * num_train
    world = setup.world
    batch_size = max(world.size, min(config.batch_size, num_train))
    if world.active:
        run.emit(
            Message(
                f"{world.size} processes train together (DDP): each step's {batch_size} pictures are shared out "
                f"between them, about {batch_size // world.size} each."
            )
        )
    loop = _Loop(
        optimizer=torch.optim.AdamW(
            _param_groups(setup.model, setup.plan, config, head_from_zero=setup.probe is None), lr=config.lr
        ),
        criterion=criterion,
        total_images=total_images,
        warmup_images=min(config.warmup_epochs * num_train, total_images / 2),
        batch_size=batch_size,
    )
    run.emit(
        Schedule(planned_lrs(num_train, loop.batch_size, config.epochs, config.lr, loop.warmup_images, world.size))
    )
    return loop


def _train_epoch_shrinking_on_oom(setup: _Setup, loop: _Loop, run: _Run, epoch: int) -> tuple[float, float]:
    """One epoch; when the GPU runs out of memory, redo it with half the batch, as if the failed try had not been."""
    while True:
        before = replace(loop)
        try:
            return _train_epoch(setup, loop, run, epoch)
        except torch.cuda.OutOfMemoryError:
            if loop.batch_size == 1 or setup.world.active:  # one process cannot shrink alone: the run fails, saying so
                raise
            loop.images_seen, loop.train_time, loop.step = before.images_seen, before.train_time, before.step
            loop.batch_size //= 2
            loop.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            run.emit(Message(f"The GPU ran out of memory; going on with batch size {loop.batch_size}.", "warning"))


def _train_epoch(setup: _Setup, loop: _Loop, run: _Run, epoch: int) -> tuple[float, float]:
    """One pass over the shuffled training images; returns (mean loss, accuracy)."""
    if setup.trained_module is setup.model:
        set_train_mode(setup.model, keep_statistics=setup.probe is not None)  # frozen BatchNorm layers stay in eval
    else:
        setup.trained_module.train()
    world, num_train = setup.world, len(setup.rows["train"])
    sampler = StepSampler(num_train, loop.batch_size, world, setup.config.seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    rows, labels = setup.rows["train"], setup.labels["train"]
    loss_sum, correct = 0.0, 0
    for index, (mine, whole) in enumerate(batches, start=1):
        run.check_stop_together()
        loss, n_correct = _train_step(setup, loop, rows[mine], labels[torch.from_numpy(mine)], labels[whole])
        loss_sum += loss / world.size * len(whole)  # summed over the processes: the batch's mean loss x its count
        correct += n_correct
        speed = loop.images_per_second
        run.emit(
            Step(
                epoch,
                loop.step,
                index,
                len(batches),
                len(batches) * setup.config.epochs,
                round(loss, 5),
                loop.lr,
                round(speed, 2),
                round((loop.total_images - loop.images_seen) / speed, 1),
            )  # fmt: skip
        )
    loss_sum, correct = world.sum(loss_sum, correct)
    return loss_sum / num_train, correct / num_train


class StepSampler:
    """The pictures of each step of an epoch, as PyTorch's DistributedSampler gives a process its share (set_epoch,
    then iterate) but by global batch: one permutation per epoch, seeded and so the same in every process, cut into
    the batches one process would take, each shared out as batch[rank::size]. So N processes take exactly the steps
    of one with the whole batch (a last batch smaller than N joins the one before, so none has an empty share)."""

    def __init__(self, num_items: int, batch_size: int, world: World, seed: int):
        self.num_items, self.batch_size, self.world, self.seed = num_items, batch_size, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(this process's positions, the whole batch's positions) of each step."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)  # seed s+1 is not epoch+1
        order = torch.randperm(self.num_items, generator=generator).numpy()
        for start, end in _batches(self.num_items, self.batch_size, smallest=max(2, self.world.size)):
            whole = order[start:end]
            yield whole[self.world.rank :: self.world.size], whole

    def __len__(self) -> int:
        return len(_batches(self.num_items, self.batch_size, smallest=max(2, self.world.size)))


def _train_step(
    setup: _Setup, loop: _Loop, rows: np.ndarray, labels: torch.Tensor, whole_batch_labels: torch.Tensor
) -> tuple[float, int]:
    """One optimiser step on this process's share of a batch; returns (loss, how many it got right).

    The loss is this share's sum over the whole batch's count (its class weights' sum, when the loss is weighted),
    times the number of processes: DDP averages the processes' gradients, so the step's gradient is that of the
    whole batch's mean loss, however unevenly the batch was shared out."""
    tick = time.perf_counter()
    loop.lr = setup.config.lr * _lr_factor(loop.images_seen, loop.total_images, loop.warmup_images)
    for group in loop.optimizer.param_groups:
        group["lr"] = loop.lr * group["lr_scale"]
    y = labels.to(setup.device, non_blocking=True)
    with autocast(setup.device):
        logits = setup.batch_logits(rows, True)
    weight = loop.criterion.weight
    count = weight.cpu()[whole_batch_labels].sum() if weight is not None else len(whole_batch_labels)
    loss = loop.criterion(logits.float(), y) / count * setup.world.size
    loop.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    loop.optimizer.step()
    loss_value = loss.item()  # waits for the device, so the step time below is real
    loop.train_time += time.perf_counter() - tick
    loop.images_seen += len(whole_batch_labels)
    loop.step += 1
    return loss_value, int((logits.argmax(1) == y).sum())


def _evaluate(setup: _Setup, split: str, check_stop: Callable[[], None] = lambda: None, mirror: bool = False) -> dict:
    """Plain cross-entropy and accuracy over a split, with (position, true, predicted, confidence) per image.

    With `mirror`, each picture's probabilities are the mean of its own and its mirror image's."""
    log_probs = _log_probabilities(setup, split, check_stop)
    if mirror:
        mirrored = _log_probabilities(setup, split, check_stop, mirrored=True)
        log_probs = torch.logsumexp(torch.stack([log_probs, mirrored]), 0) - math.log(2)
    labels = setup.labels[split]
    confidence, predicted = log_probs.exp().max(1)
    n = max(len(labels), 1)
    return {
        "loss": F.nll_loss(log_probs, labels, reduction="sum").item() / n,
        "accuracy": int((predicted == labels).sum()) / n,
        "log_probs": log_probs,
        "predictions": list(
            zip(range(len(labels)), labels.tolist(), predicted.tolist(), confidence.tolist(), strict=True)
        ),
    }


def _log_probabilities(setup: _Setup, split: str, check_stop: Callable[[], None], mirrored: bool = False):
    """N x classes log-probabilities of a split's pictures (on the CPU), or of their mirror images. Several
    processes each compute their share and gather the whole."""
    setup.trained_module.eval()
    setup.model.eval()
    rows = setup.rows[split]
    mine = np.arange(len(rows))[setup.world.share(len(rows))]
    out = [torch.zeros(0, len(setup.manifest.class_names))]
    with torch.no_grad():
        for start, end in _batches(len(mine), 64):
            check_stop()
            with autocast(setup.device):
                if mirrored:
                    x = to_model_input(_pictures(setup, split, mine[start:end]), setup.spec)
                    logits = setup.model(on_device_layout(x.flip(-1), setup.device))
                else:
                    logits = setup.batch_logits(rows[mine[start:end]], False)
            out.append(logits.float().log_softmax(1).cpu())
    return setup.world.gather_rows(torch.cat(out), len(rows))


def _keep_best(writer: RunWriter, setup: _Setup, predictions: list) -> None:
    """The best weights so far, and predictions.csv of those weights, so an interrupted run keeps a matching pair."""
    writer.save_weights(setup.model)
    _write_predictions(writer, setup, predictions)


def _write_predictions(writer: RunWriter, setup: _Setup, predictions: list, probabilities=None) -> None:
    """predictions.csv: per validation picture its class, the answer and its confidence (and with `probabilities`,
    every class's calibrated probability, for Evaluate's thresholds)."""
    val_samples, names = setup.manifest.split("val"), setup.manifest.class_names
    rows = [(val_samples[i].path, names[t], names[p], c) for i, t, p, c in predictions]
    writer.write_predictions(rows, names if probabilities is not None else None, probabilities)


def _should_stop_early(history: list[dict], patience: int) -> bool:
    """True when the last `patience` epochs brought no validation loss better than the best before them."""
    if not patience or len(history) <= patience:
        return False
    best_before = min(h["val_loss"] for h in history[:-patience])
    return all(h["val_loss"] >= best_before - 1e-4 for h in history[-patience:])


def _pictures(setup: _Setup, split: str, positions: np.ndarray) -> torch.Tensor:
    """uint8 N x 3 x cache x cache of a split's pictures at `positions`: from the decoded-image cache when the whole
    model trained (it is there), else decoded now (a frozen backbone never decoded the whole data set, nor should
    this)."""
    if setup.trained_module is setup.model:
        images = cache.decoded_images(setup.manifest, setup.spec.cache_size)
        return cache.to_batch(images, setup.rows[split][positions], setup.device)
    samples = setup.manifest.split(split)
    squares = map_with_progress(lambda i: _square_or_grey(samples[i].path, setup.spec.cache_size), positions)
    return torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2).to(setup.device)


def _square_or_grey(path: str, size: int) -> np.ndarray:
    try:
        return load_square(path, size)
    except UnusableImage:  # changed since it was checked: grey, as the decoded-image cache does
        return np.full((size, size, 3), 127, dtype=np.uint8)


def _load_kept(setup: _Setup, writer: RunWriter) -> None:
    from safetensors.torch import load_file

    setup.model.load_state_dict(load_file(str(writer.run_dir / "model.safetensors")))


def _choose_mirroring(setup: _Setup, run: _Run) -> tuple[dict, dict | None]:
    """Test-time augmentation: with the kept weights, validation predicted from each picture and its mirror image;
    kept (config 'auto') only when it does better than the pictures alone, accuracy first, then loss. Mirroring
    is wrong for some pictures (text, left/right anatomy), and validation is where that shows.

    Returns the summary's part and the kept weights' validation pass as they will predict (None if stopped)."""
    _load_kept(setup, run.writer)
    try:
        plain = _evaluate(setup, "val", run.check_stop)
        if setup.config.tta == "off":
            return {}, plain
        mirrored = _evaluate(setup, "val", run.check_stop, True)
    except StopRequested:
        return {}, None  # asked to stop while trying: the run ends with its pictures as they are
    helps = (mirrored["accuracy"], -mirrored["loss"]) > (plain["accuracy"], -plain["loss"])
    setup.mirror = setup.config.tta == "on" or helps
    return {
        "tta": {
            "mirror": setup.mirror,
            "val_accuracy_plain": plain["accuracy"],
            "val_loss_plain": round(plain["loss"], 6),
            "val_accuracy_mirrored": mirrored["accuracy"],
            "val_loss_mirrored": round(mirrored["loss"], 6),
        }
    }, (mirrored if setup.mirror else plain)


def _calibrate(setup: _Setup, writer: RunWriter, val: dict | None) -> dict:
    """Temperature scaling on the kept weights' validation pass; predictions.csv then holds the calibrated
    probabilities of every class, which Evaluate, Predict and the export use."""
    if val is None:
        return {}
    fitted = calibration.calibrate(val["log_probs"].numpy(), setup.labels["val"].numpy())
    probabilities = calibrated_probabilities(val["log_probs"].numpy(), fitted.temperature)
    predictions = [(i, t, p, float(probabilities[i].max())) for i, t, p, _ in val["predictions"]]
    _write_predictions(writer, setup, predictions, probabilities)
    return {"calibration": fitted.summary()}


def _test_pass(setup: _Setup, writer: RunWriter) -> dict:
    """The test split, measured once, with the kept (best) weights, mirrored pictures too if validation chose so."""
    _load_kept(setup, writer)
    test = _evaluate(setup, "test", mirror=setup.mirror)
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "num_test": len(setup.rows["test"])}


def _kept_sentence(summary: dict) -> str:
    if not summary["epochs_run"]:
        return "No epoch was completed, so no weights were kept."
    kept = (
        f"The kept model is epoch {summary['best_epoch']}'s, the best on validation: "
        f"{summary['best_val_accuracy']:.1%} accuracy"
    )
    tta = summary.get("tta")
    if tta and tta["mirror"]:
        return f"{kept} with each picture's mirror image averaged in ({tta['val_accuracy_plain']:.1%} without)."
    if tta:
        return f"{kept} (the mirror images did not help: {tta['val_accuracy_mirrored']:.1%}, so they are not used)."
    return kept + "."


# ---------------------------------------------------------------- small pieces


def _param_groups(model: nn.Module, plan: FreezePlan, config: TrainConfig, head_from_zero: bool) -> list[dict]:
    """Trainable parameters by block (for layer-wise learning rates), with no weight decay on biases and norms."""
    scale_of: dict[str, float] = {}
    if head_from_zero and plan.frozen_blocks < plan.total_blocks:  # a zero head has the most to learn
        scale_of.update(dict.fromkeys(plan.head_param_names, config.head_lr_scale))
    if config.layer_decay:
        for block, scale in zip(plan.blocks, layer_lr_scales(plan, config.layer_decay), strict=True):
            scale_of.update(dict.fromkeys(block.param_names, scale))
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((scale_of.get(name, 1.0), param.ndim <= 1), []).append(param)
    return [
        {"params": params, "lr_scale": scale, "weight_decay": 0.0 if no_decay else config.weight_decay}
        for (scale, no_decay), params in groups.items()
    ]


def planned_lrs(
    num_train: int, batch_size: int, epochs: int, lr: float, warmup_images: float, processes: int = 1
) -> list[float]:
    """The learning rate of every step of the run as planned (the page draws it whole from the start)."""
    sizes = [end - start for start, end in _batches(num_train, batch_size, smallest=max(2, processes))] * epochs
    seen = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return [lr * _lr_factor(float(s), float(epochs * num_train), warmup_images) for s in seen]


def _lr_factor(images_seen: float, total_images: float, warmup_images: float) -> float:
    """Linear warmup, then cosine decay to 1% of the peak, as a function of how far training has got."""
    if images_seen < warmup_images:
        return (images_seen + 1) / (warmup_images + 1)
    progress = (images_seen - warmup_images) / max(total_images - warmup_images, 1)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _class_weights(train_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, so every class counts as much in the loss whatever its number of images."""
    counts = torch.bincount(train_labels, minlength=num_classes).float().clamp(min=1)
    return counts.sum() / (num_classes * counts)


def _batches(n: int, batch_size: int, smallest: int = 2) -> list[tuple[int, int]]:
    """(start, end) pairs; a last batch under `smallest` is folded into the previous one (BatchNorm needs two
    pictures; several processes, one each)."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < smallest:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds

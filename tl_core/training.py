"""The training loop: synchronous, seeded, readable top to bottom.

train(config) scans the data, builds the backbone with its weights, freezes the first K blocks, decodes every image
once, and then fine-tunes with AdamW, warmup + cosine, label smoothing and early stopping, keeping the best weights.
When the whole backbone is frozen and augmentation is off, the backbone's features are computed once (and cached on
disk) and only the head trains on them: the same result, without paying the backbone's forward pass every epoch.
Progress goes out as events (dicts) to `on_event` and to the run folder's metrics.jsonl.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tl_core import cache, settings
from tl_core.backbones import create_backbone
from tl_core.data import DatasetManifest, scan_dataset
from tl_core.devices import describe_device, pick_device
from tl_core.errors import DataError, user_message
from tl_core.freezing import FreezePlan, apply_freeze, layer_lr_scales, set_train_mode
from tl_core.preprocess import InputSpec, to_model_input
from tl_core.runs import START_FIELDS, RunWriter

EventSink = Callable[[dict], None]


@dataclass
class TrainConfig:
    data_dir: str
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "auto"  # auto | hub | offline | none | PATH
    freeze: str = "all"  # all | none | K (the first K blocks stay frozen)
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None  # None: 1e-3
    img_size: int | None = None  # None: the backbone's own
    val_split: float = 0.2
    test_split: float = 0.0
    seed: int = 0
    device: str = "auto"
    runs_dir: str = field(default_factory=lambda: str(settings.runs_dir()))
    augment: str = "auto"  # auto (off when the whole backbone is frozen) | on | off
    label_smoothing: float = 0.1
    class_balanced: bool = False
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    early_stopping: int = 5  # epochs without a better validation loss before stopping; 0 turns it off
    layer_decay: float | None = None  # e.g. 0.75: each block further from the head learns 0.75x as fast
    feature_cache: bool = True
    head_lr_scale: float = 3.0  # when backbone blocks train too, the new head learns this many times faster
    compile: bool = False  # torch.compile the model (CUDA only: pays on long runs, costs a minute of compiling)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else 1e-3

    def resolved_augment(self) -> bool:
        return self.augment == "on" or (self.augment == "auto" and self.freeze != "all")


@dataclass
class _Setup:
    """What the loop needs: the model, how to get a batch's logits, and the rows and labels of each split."""

    model: nn.Module
    trained_module: nn.Module  # the head alone when it trains on cached features, else the whole model
    plan: FreezePlan
    batch_logits: Callable[[np.ndarray, bool], torch.Tensor]  # (cache rows, training?) -> logits
    rows: dict[str, np.ndarray]  # split -> rows of the decoded-image (or feature) cache
    labels: dict[str, torch.Tensor]
    manifest: DatasetManifest
    device: torch.device
    spec: InputSpec
    use_features: bool


class StopRequested(Exception):
    """Raised inside the loop when the job was asked to stop."""


def train(
    config: TrainConfig,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    manifest: DatasetManifest | None = None,
) -> dict:
    """Run one training to its end and return the summary (also written to the run folder)."""
    should_stop = should_stop or (lambda: False)
    writer = RunWriter(config.runs_dir, config.backbone)
    started = time.monotonic()
    state: dict = {"run_dir": str(writer.run_dir), **dict.fromkeys(START_FIELDS), "backbone": config.backbone}

    def emit(event: dict) -> None:
        event = {"event": event.pop("event"), "time": round(time.time(), 3), **event}
        writer.log(event)
        if on_event:
            on_event(event)

    def progress(stage: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            if should_stop():
                raise StopRequested
            emit({"event": "progress", "stage": stage, "done": done, "total": total})

        return report

    writer.write_json(
        "config.json", {**asdict(config), "lr": config.resolved_lr(), "augment": config.resolved_augment()}
    )
    emit({"event": "status", "state": "starting", "run_dir": str(writer.run_dir)})
    try:
        summary = _fit(
            config, _prepare(config, writer, emit, progress, manifest, state), writer, emit, should_stop, state
        )
    except StopRequested:
        summary = _summary_without_training(writer, state, "stopped", "Stopped before training began.")
    except Exception as exc:
        _finish(writer, emit, _summary_without_training(writer, state, "failed", user_message(exc)), started)
        raise
    return _finish(writer, emit, summary, started)


def _finish(writer: RunWriter, emit: EventSink, summary: dict, started: float) -> dict:
    """Write the summary, tell the listeners, release the run folder."""
    summary["train_seconds"] = round(time.monotonic() - started, 2)  # wall time of the whole run, caches included
    writer.write_json("summary.json", summary)
    emit({"event": "end", **summary})
    writer.close()
    return summary


def _prepare(config, writer, emit, progress, manifest, state) -> _Setup:
    """Data, backbone, freezing, caches: everything the loop needs, with the run folder's first files written."""
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    if manifest is None:
        manifest = scan_dataset(
            config.data_dir,
            val_fraction=config.val_split,
            test_fraction=config.test_split,
            seed=config.seed,
            on_progress=progress("scan"),
        )
    writer.write_json("split.json", manifest.split_table())
    writer.write_json("labels.json", manifest.class_names)
    train_set, val_set, test_set = manifest.split("train"), manifest.split("val"), manifest.split("test")
    if not train_set:
        raise DataError("No usable picture is left for training. Add images to the class folders (or to train/).")
    if not val_set:
        raise DataError(
            "No picture is left for validation, so accuracy cannot be measured. Add images (at least 2 per class) "
            "or, with your own train/ and val/ folders, put some in val/."
        )
    num_classes = len(manifest.class_names)

    backbone = create_backbone(config.backbone, num_classes, config.weights, config.seed, config.img_size)
    model = backbone.model
    plan = apply_freeze(model, config.freeze)
    spec = InputSpec.from_data_config(backbone.data_config, config.img_size)
    augment = config.resolved_augment()
    head_only = plan.frozen_blocks == plan.total_blocks
    use_features = head_only and not augment and config.feature_cache
    writer.write_json(
        "config.json",
        {
            **asdict(config),
            "lr": config.resolved_lr(),
            "augment": augment,
            "num_classes": num_classes,
            "input": spec.to_dict(),
            "weights_used": backbone.weights,
        },
    )
    state.update(_start_fields(config, backbone, device, manifest, plan, train_set, val_set))
    emit(
        {
            "event": "start",
            **state,
            "feature_cache": use_features,
            "augment": augment,
            "input": spec.to_dict(),
            "device_name": describe_device(device),
        }
    )

    def decoded_images() -> np.ndarray:
        return cache.decoded_images(manifest, spec.cache_size, on_progress=progress("decode"))

    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    labels = {
        split: torch.tensor([s.label for s in samples])
        for split, samples in (("train", train_set), ("val", val_set), ("test", test_set))
    }
    rows = {
        split: cache.rows_for(manifest, samples)
        for split, samples in (("train", train_set), ("val", val_set), ("test", test_set))
    }

    if use_features:
        # On a cache hit the pictures are not even decoded: the features are all the head needs.
        features, hit = _backbone_features(model, manifest, decoded_images, spec, backbone, config, device, progress)
        emit({"event": "feature_cache", "hit": hit, "dim": int(features.shape[1])})
        inputs = torch.from_numpy(np.asarray(features))
        head = model.get_classifier()

        def batch_logits(batch_rows: np.ndarray, training: bool) -> torch.Tensor:
            return head(inputs[batch_rows].to(device, non_blocking=True))

        trained_module: nn.Module = head
    else:
        images = decoded_images()
        generator = torch.Generator().manual_seed(config.seed)
        forward = torch.compile(model) if config.compile and device.type == "cuda" else model

        def batch_logits(batch_rows: np.ndarray, training: bool) -> torch.Tensor:
            x = to_model_input(cache.to_batch(images, batch_rows, device), spec, augment and training, generator)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            return forward(x)

        trained_module = model

    return _Setup(model, trained_module, plan, batch_logits, rows, labels, manifest, device, spec, use_features)


def _fit(config: TrainConfig, setup: _Setup, writer: RunWriter, emit: EventSink, should_stop, state: dict) -> dict:
    """The loop proper: epochs of shuffled batches, a validation pass after each, best weights kept."""
    model, trained_module, rows, labels, device = (
        setup.model,
        setup.trained_module,
        setup.rows,
        setup.labels,
        setup.device,
    )
    batch_logits = setup.batch_logits
    lr = config.resolved_lr()
    optimizer = torch.optim.AdamW(_param_groups(model, setup.plan, lr, config), lr=lr, weight_decay=config.weight_decay)
    class_weights = _class_weights(labels["train"], len(setup.manifest.class_names)) if config.class_balanced else None
    criterion = nn.CrossEntropyLoss(
        weight=None if class_weights is None else class_weights.to(device), label_smoothing=config.label_smoothing
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    rng = np.random.default_rng(config.seed)
    num_train = len(rows["train"])
    total_images = config.epochs * num_train
    warmup_images = min(config.warmup_epochs * num_train, total_images / 2)
    progress = {"images_seen": 0, "train_time": 0.0, "step": 0, "batch_size": max(1, min(config.batch_size, num_train))}
    emit({"event": "schedule", "lrs": planned_lrs(num_train, progress["batch_size"], config.epochs, lr, warmup_images)})

    def run_epoch(epoch: int) -> tuple[float, float]:
        """One pass over the shuffled training images; returns (mean loss, accuracy)."""
        if trained_module is model:
            set_train_mode(model)
        else:
            trained_module.train()
        shuffle = rng.permutation(num_train)
        order, order_labels = rows["train"][shuffle], labels["train"][torch.from_numpy(shuffle)]
        batch_size = progress["batch_size"]
        batches = _batches(num_train, batch_size)
        loss_sum, correct = 0.0, 0
        for index, (start, end) in enumerate(batches, start=1):
            if should_stop():
                raise StopRequested
            tick = time.perf_counter()
            lr_now = lr * _lr_factor(progress["images_seen"], total_images, warmup_images)
            for group in optimizer.param_groups:
                group["lr"] = lr_now * group["lr_scale"]
            y = order_labels[start:end].to(device, non_blocking=True)
            with autocast:
                logits = batch_logits(order[start:end], True)
            loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = loss.item()  # waits for the device, so the step time below is real
            progress["train_time"] += time.perf_counter() - tick
            progress["images_seen"] += end - start
            progress["step"] += 1
            loss_sum += loss_value * (end - start)
            correct += int((logits.argmax(1) == y).sum())
            speed = progress["images_seen"] / max(progress["train_time"], 1e-9)
            emit(
                {
                    "event": "step",
                    "epoch": epoch,
                    "step": progress["step"],
                    "epoch_step": index,
                    "steps_per_epoch": len(batches),
                    "total_steps": len(batches) * config.epochs,
                    "loss": round(loss_value, 5),
                    "lr": lr_now,
                    "images_per_second": round(speed, 2),
                    "eta_seconds": round((total_images - progress["images_seen"]) / speed, 1),
                }
            )
        return loss_sum / num_train, correct / num_train

    best = {"accuracy": -1.0, "loss": math.inf, "epoch": 0}
    history: list[dict] = []
    stale_epochs, best_loss_seen = 0, math.inf
    status, message = "finished", ""
    try:
        for epoch in range(1, config.epochs + 1):
            while True:
                before = dict(progress)
                try:
                    train_loss, train_accuracy = run_epoch(epoch)
                    break
                except torch.cuda.OutOfMemoryError:
                    if progress["batch_size"] == 1:
                        raise
                    # Redo the epoch with half the batch, as if the failed attempt had not happened.
                    progress.update(before, batch_size=before["batch_size"] // 2)
                    optimizer.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                    emit(
                        {
                            "event": "message",
                            "level": "warning",
                            "text": f"The GPU ran out of memory; going on with batch size {progress['batch_size']}.",
                        }
                    )
            val = _evaluate(batch_logits, rows["val"], labels["val"], autocast, trained_module, model, device)
            record = {
                "epoch": epoch,
                "epochs": config.epochs,
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "lr": optimizer.param_groups[-1]["lr"],
                "images_per_second": round(progress["images_seen"] / max(progress["train_time"], 1e-9), 2),
            }
            history.append(record)
            state["epochs_run"] = epoch
            improved = (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"])
            if improved:
                best.update(accuracy=val["accuracy"], loss=val["loss"], epoch=epoch)
                writer.save_weights(model)
                _write_predictions(writer, setup.manifest, val["predictions"])
            emit({"event": "epoch", **record, "best": improved})
            if val["loss"] < best_loss_seen - 1e-4:
                best_loss_seen, stale_epochs = val["loss"], 0
            else:
                stale_epochs += 1
            if config.early_stopping and stale_epochs >= config.early_stopping:
                message = (
                    f"Stopped early after epoch {epoch}: the validation loss had not improved for "
                    f"{config.early_stopping} epochs."
                )
                break
    except StopRequested:
        status = "stopped"
        message = f"Stopped on request after {len(history)} complete epoch(s); the best weights so far are kept."

    summary = {
        **state,
        "status": status,
        "epochs_run": len(history),
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "best_val_accuracy": best["accuracy"] if history else None,
        "best_epoch": best["epoch"],
        "val_loss": history[-1]["val_loss"] if history else None,
        "train_loss": history[-1]["train_loss"] if history else None,
        "step_seconds": round(progress["train_time"], 2),  # time in optimisation steps only
        "train_images_per_second": round(progress["images_seen"] / max(progress["train_time"], 1e-9), 2),
        "batch_size": progress["batch_size"],
        "feature_cache": setup.use_features,
        "input": setup.spec.to_dict(),
    }
    if len(rows["test"]) and history:
        model.load_state_dict(_read_weights(writer.run_dir / "model.safetensors"))
        test = _evaluate(batch_logits, rows["test"], labels["test"], autocast, trained_module, model, device)
        summary.update(test_accuracy=test["accuracy"], test_loss=test["loss"], num_test=len(rows["test"]))
    summary["message"] = message or (
        f"Trained {len(history)} epoch(s); best validation accuracy {best['accuracy']:.1%} at epoch {best['epoch']}."
    )
    return summary


def _write_predictions(writer: RunWriter, manifest: DatasetManifest, predictions: list) -> None:
    """predictions.csv of the best weights, rewritten with them, so an interrupted run keeps a matching pair."""
    val_samples, names = manifest.split("val"), manifest.class_names
    writer.write_predictions([(val_samples[i].path, names[t], names[p], c) for i, t, p, c in predictions])


def _evaluate(batch_logits, rows, labels, autocast, trained_module, model, device) -> dict:
    """Plain cross-entropy and accuracy over `rows`, with (position, true, predicted, confidence) per image."""
    trained_module.eval()
    model.eval()
    total_loss, correct, predictions = 0.0, 0, []
    with torch.no_grad():
        for start, end in _batches(len(rows), 64):
            y = labels[start:end].to(device)
            with autocast:
                logits = batch_logits(rows[start:end], False)
            logits = logits.float()
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            confidence, predicted = logits.softmax(1).max(1)
            correct += int((predicted == y).sum())
            predictions += zip(range(start, end), y.tolist(), predicted.tolist(), confidence.tolist(), strict=True)
    n = max(len(rows), 1)
    return {"loss": total_loss / n, "accuracy": correct / n, "predictions": predictions}


def _backbone_features(model, manifest, decoded_images, spec, backbone, config, device, progress):
    """Pooled backbone features of every image (eval mode, centre crop), from the disk cache when present."""
    key = cache.feature_key(manifest, config.backbone, backbone.weights_id, spec.img_size)

    def compute() -> np.ndarray:
        images = decoded_images()
        model.eval()
        out = []
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        all_rows = np.arange(len(images))
        report = progress("features")
        with torch.no_grad(), autocast:
            for start, end in _batches(len(all_rows), 64):
                x = to_model_input(cache.to_batch(images, all_rows[start:end], device), spec)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
                report(end, len(all_rows))
        return torch.cat(out).numpy()

    return cache.cached_features(key, compute)


def _param_groups(model: nn.Module, plan: FreezePlan, lr: float, config: TrainConfig) -> list[dict]:
    """Trainable parameters by block (for layer-wise learning rates), with no weight decay on biases and norms."""
    scale_of: dict[str, float] = {}
    body_trains = plan.frozen_blocks < plan.total_blocks
    if body_trains:  # the new head starts from zero and has the most to learn: it gets a larger step
        head = set(plan.head_param_names)
        scale_of.update(dict.fromkeys(head, config.head_lr_scale))
    if config.layer_decay:
        for block, scale in zip(plan.blocks, layer_lr_scales(plan, config.layer_decay), strict=True):
            scale_of.update(dict.fromkeys(block.param_names, scale))
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (scale_of.get(name, 1.0), param.ndim <= 1)
            groups.setdefault(key, []).append(param)
    return [
        {
            "params": params,
            "lr": lr * scale,
            "lr_scale": scale,
            "weight_decay": 0.0 if no_decay else config.weight_decay,
        }
        for (scale, no_decay), params in groups.items()
    ]


def planned_lrs(num_train: int, batch_size: int, epochs: int, lr: float, warmup_images: float) -> list[float]:
    """The learning rate of every step of the run as planned (the page draws it whole from the start)."""
    sizes = [end - start for start, end in _batches(num_train, batch_size)] * epochs
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


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) pairs; a lone last image is folded into the previous batch (BatchNorm needs two)."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _read_weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _start_fields(config, backbone, device, manifest, plan, train_set, val_set) -> dict:
    return {
        "backbone": config.backbone,
        "weights": backbone.weights,
        "device": str(device),
        "num_classes": len(manifest.class_names),
        "class_names": manifest.class_names,
        "num_train": len(train_set),
        "num_val": len(val_set),
        "frozen_blocks": plan.frozen_blocks,
        "total_blocks": plan.total_blocks,
        "trainable_params": plan.trainable_params,
        "total_params": plan.total_params,
    }


def _summary_without_training(writer: RunWriter, state: dict, status: str, message: str) -> dict:
    return {
        **state,
        "run_dir": str(writer.run_dir),
        "status": status,
        "epochs_run": 0,
        "val_accuracy": None,
        "best_val_accuracy": None,
        "val_loss": None,
        "train_images_per_second": 0.0,
        "message": message,
    }

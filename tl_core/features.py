"""The frozen pretrained backbone's features of every picture (pooled, before the head): computed once and cached on
disk by content, backbone, weights and size, so a later run, the mislabel finder or the data-efficiency curve on the
same pictures skip straight past it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tl_core import cache
from tl_core.backbones import Backbone
from tl_core.data import DatasetManifest
from tl_core.devices import autocast, on_device_layout
from tl_core.errors import DataError, RunNotFoundError
from tl_core.preprocess import InputSpec, to_model_input
from tl_core.runs import read_json

BATCH = 64
Progress = Callable[[int, int], None] | None


def pretrained_features(
    manifest: DatasetManifest,
    backbone_name: str,
    backbone: Backbone,
    spec: InputSpec,
    device: torch.device,
    progress: Callable[[str], Progress] = lambda stage: None,
) -> tuple[torch.Tensor, bool]:
    """(features by row of the decoded-image cache, whether they came from the cache): `cache.rows_for` finds a
    sample's row (or use `by_sample`). `progress(stage)` gives the callback for 'decode' and 'features'."""
    model = backbone.model
    key = cache.feature_key(manifest, backbone_name, backbone.weights_id, spec.img_size)

    def compute() -> np.ndarray:
        # One pass in order: memory-mapped, so the pictures are not copied into RAM first (1.2 GB for 20,000 at
        # 146 px); the features go straight into one array, not batches joined at the end (twice their size).
        images = cache.decoded_images(manifest, spec.cache_size, on_progress=progress("decode"), in_memory=False)
        report = progress("features")
        model.eval()
        out: np.ndarray | None = None  # its width is the first batch's (not every model says it)
        with torch.no_grad(), autocast(device):
            for start in range(0, len(images), BATCH):
                end = min(start + BATCH, len(images))
                x = on_device_layout(
                    to_model_input(cache.to_batch(images, np.arange(start, end), device), spec), device
                )
                batch = model.forward_head(model.forward_features(x), pre_logits=True).float().cpu().numpy()
                if out is None:
                    out = np.empty((len(images), batch.shape[1]), dtype=np.float32)
                out[start:end] = batch
                if report:
                    report(end, len(images))
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    features, hit = cache.cached_features(key, compute)  # on a hit the pictures are not even decoded
    return torch.from_numpy(np.asarray(features)), hit


def _is_a_runs_weights(weights: str) -> bool:
    """A run's own model.safetensors (a continued run): it learnt these labels, so it cannot check them."""
    path = Path(weights)
    return path.name == "model.safetensors" and (path.parent / "summary.json").exists()


def by_sample(manifest: DatasetManifest, features: torch.Tensor) -> torch.Tensor:
    """Features in the order of `manifest.samples` (the cache keeps one row per distinct picture)."""
    return features[torch.from_numpy(cache.rows_for(manifest, manifest.samples))]


def features_of_run(
    run_dir: str | Path, progress: Callable[[str], Progress] = lambda stage: None
) -> tuple[DatasetManifest, torch.Tensor, dict]:
    """A run's pictures (split as it split them) and their pretrained features (in the samples' order), for the analyses that refit a head
    in seconds (mislabelled pictures, accuracy against the share of pictures). A run from random weights is
    analysed on the pretrained ones: random features know nothing of the pictures."""
    from tl_core.backbones import create_backbone
    from tl_core.data import scan_dataset
    from tl_core.devices import pick_device

    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json", default=None)
    if not config or "input" not in config:
        raise RunNotFoundError(f"'{run_dir.name}' is not a finished Headstart run (its config.json is missing).")
    manifest = scan_dataset(
        config["data_dir"],
        val_fraction=config["val_split"],
        test_fraction=config.get("test_split", 0.0),
        seed=config["seed"],
        on_progress=progress("scan"),
    )
    then = {(f["path"], f["label"]) for f in (read_json(run_dir / "split.json", {}) or {}).get("files", [])}
    if then != {(s.relpath, manifest.class_names[s.label]) for s in manifest.samples}:
        raise DataError(
            f"The pictures in '{config['data_dir']}' changed since run '{run_dir.name}' trained on them, so they "
            "cannot be checked against it. Train a new run on them, then look again."
        )
    weights = config["weights"]
    if weights == "none" or _is_a_runs_weights(weights):  # random, or already trained on these very labels
        weights = "auto"
    img_size = config["input"]["img_size"]
    backbone = create_backbone(config["backbone"], len(manifest.class_names), weights, config["seed"], img_size)
    spec = InputSpec.from_data_config(backbone.data_config, img_size)  # the pretrained weights' own normalisation
    features, _ = pretrained_features(manifest, config["backbone"], backbone, spec, pick_device("auto"), progress)
    return manifest, by_sample(manifest, features), config

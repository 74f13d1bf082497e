"""Headstart against the plain timm + PyTorch loop a user would write, on the same data, model and batch size.

    python benchmarks/bench_train.py frozen   # backbone frozen, 10 epochs, 500 images, 224 px: end-to-end seconds
    python benchmarks/bench_train.py full     # full fine-tuning: training images/s
    python benchmarks/bench_train.py quick    # the UI's "quick model": 500 images, 224 px, first run, cold caches
    python benchmarks/bench_train.py memory   # 5,000 images at 224 px: peak resident memory (quick model + 1 epoch full)
    python benchmarks/bench_train.py ceiling  # full fine-tuning against the model's own forward+backward throughput on
                                              # one batch already on the device (the GPU target; runs on CPU too)

The live page's cost is measured for real, with Chromium and `streamlit run`, by benchmarks/bench_ui_browser.py.

Each prints one JSON line of results (and the ratio where there is a plain loop to compare with). Caches go to a
fresh temporary folder unless --cache-dir is given, so "first run" really is the first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tl_core.backbones import create_backbone  # noqa: E402
from tl_core.devices import pick_device  # noqa: E402
from tl_core.runs import read_metrics  # noqa: E402


def make_photos(dest: Path, per_class: int, seed: int = 0) -> Path:
    """Real photographs (scikit-learn's two samples) cut into varied 320x240 JPEG crops: two classes of real pixels."""
    from sklearn.datasets import load_sample_images

    marker = dest / f".done-{per_class}"
    if marker.exists():
        return dest
    rng = np.random.default_rng(seed)
    for name, photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        h, w, _ = photo.shape
        for i in range(per_class):
            side = int(rng.integers(120, min(h, w)))
            y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((320, 240), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop.save(folder / f"{i:05d}.jpg", quality=90)
    marker.touch()
    return dest


def plain_loop(data: Path, epochs: int, batch_size: int, img_size: int, freeze_all: bool, augment: bool) -> dict:
    """What a user writes from timm's docs: ImageFolder, timm transforms, DataLoader, AdamW, a for loop."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    backbone = create_backbone("tf_efficientnet_lite0", num_classes=2, weights="offline")
    model = backbone.model
    config = {**backbone.data_config, "input_size": (3, img_size, img_size)}
    transform = timm.data.create_transform(**config, is_training=augment)
    dataset = ImageFolder(str(data), transform=transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2, drop_last=False)
    if freeze_all:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        model.train()
        if freeze_all:
            model.eval()  # frozen BN statistics
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "images_per_second": round(seen / seconds, 2)}


def headstart(data: Path, epochs: int, batch_size: int, img_size: int, freeze: str, augment: str, **extra) -> dict:
    from tl_core.training import TrainConfig, train

    config = TrainConfig(
        str(data),
        weights="offline",
        freeze=freeze,
        epochs=epochs,
        batch_size=batch_size,
        img_size=img_size,
        augment=augment,
        early_stopping=0,
        runs_dir=extra.pop("runs_dir"),
        **extra,
    )
    start = time.perf_counter()
    summary = train(config)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "images_per_second": summary["train_images_per_second"],
        "run_dir": summary["run_dir"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "feature_cache": summary["feature_cache"],
    }


def model_only(batch_size: int, img_size: int, device: torch.device, steps: int = 30) -> dict:
    """The ceiling: forward + backward + AdamW of the same model, at Headstart's precision and memory layout, on one
    batch that already sits on the device: no decoding, no copies, no augmentation."""
    cuda = device.type == "cuda"
    model = create_backbone("tf_efficientnet_lite0", num_classes=2, weights="offline").model.to(device)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch_size,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    model.train()

    def step() -> None:
        with autocast:
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):  # warm-up: allocator, cuDNN autotuning
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"steps": steps, "images_per_second": round(steps * batch_size / seconds, 2)}


def steady_training_rate(run_dir: str) -> float:
    """Training images/s from the first to the last step of each epoch after the first, out of the run's own step
    events: wall time, so whatever happens between steps (batching, augmentation, logging) counts; validation and the
    first epoch's warm-up (allocator, kernel choice) do not, as `model_only` also warms up before it times."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    num_train = json.loads((Path(run_dir) / "summary.json").read_text())["num_train"]
    steps = [e for e in read_metrics(run_dir) if e["event"] == "step"]
    images, seconds = 0, 0.0
    for epoch in sorted({e["epoch"] for e in steps})[1:]:
        times = [e["time"] for e in steps if e["epoch"] == epoch]
        if len(times) > 2:
            images += num_train - min(config["batch_size"], num_train)  # every step's images but the first's
            seconds += times[-1] - times[0]
    return round(images / seconds, 2)


def peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["frozen", "full", "quick", "memory", "ceiling"])
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "headstart-bench"))
    parser.add_argument("--cache-dir", default=None, help="default: a fresh empty folder (cold caches)")
    args = parser.parse_args()
    work = Path(args.work_dir)
    os.environ["HEADSTART_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(
        prefix="cache-", dir=work.mkdir(parents=True, exist_ok=True) or work
    )
    runs = str(work / "runs")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    result: dict = {"benchmark": args.what, "machine": machine, "threads": torch.get_num_threads()}

    if args.what == "frozen":
        data = make_photos(work / "photos-250", 250)
        ours = headstart(data, 10, 32, 224, "all", "off", runs_dir=runs)
        plain = plain_loop(data, 10, 32, 224, freeze_all=True, augment=False)
        result.update(
            images=500, epochs=10, headstart=ours, plain=plain, speedup=round(plain["seconds"] / ours["seconds"], 2)
        )
    elif args.what == "full":
        data = make_photos(work / "photos-100", 100)
        ours = headstart(data, 2, 32, 160, "none", "on", runs_dir=runs)
        plain = plain_loop(data, 2, 32, 160, freeze_all=False, augment=True)
        result.update(
            images=200,
            epochs=2,
            img_size=160,
            headstart=ours,
            plain=plain,
            ratio=round(ours["images_per_second"] / plain["images_per_second"], 2),
        )
    elif args.what == "quick":
        data = make_photos(work / "photos-250", 250)
        ours = headstart(data, 10, 32, 224, "all", "off", runs_dir=runs)
        result.update(images=500, img_size=224, headstart=ours, target_seconds=60)
    elif args.what == "memory":
        data = make_photos(work / "photos-2500", 2500)
        quick = headstart(data, 10, 64, 224, "all", "off", runs_dir=runs)
        result.update(images=5000, quick=quick, peak_rss_gib_after_quick=peak_rss_gib())
        full = headstart(data, 1, 32, 224, "none", "on", runs_dir=runs, val_split=0.9)
        result.update(full_one_epoch_500_train=full, peak_rss_gib=peak_rss_gib())
    elif args.what == "ceiling":
        device = pick_device("auto")
        cuda = device.type == "cuda"
        # Enough images and a big enough batch for the device to be the limit: a GPU takes far more than two CPU cores.
        per_class, batch_size, img_size, epochs = (1000, 128, 224, 3) if cuda else (100, 32, 160, 3)
        data = make_photos(work / f"photos-{per_class}", per_class)
        ours = headstart(data, epochs, batch_size, img_size, "none", "on", runs_dir=runs, device=str(device))
        ours["steady_images_per_second"] = steady_training_rate(ours["run_dir"])
        ceiling = model_only(batch_size, img_size, device)
        result.update(
            device=torch.cuda.get_device_name(device) if cuda else "cpu",
            images=2 * per_class,
            img_size=img_size,
            batch_size=batch_size,
            headstart=ours,
            model_only=ceiling,
            share_of_ceiling=round(ours["steady_images_per_second"] / ceiling["images_per_second"], 3),
            target=0.8,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""How fast each backbone runs on this machine: measured, not guessed, and remembered per device."""

from __future__ import annotations

import json
import time

import timm
import torch

from tl_core import settings
from tl_core.devices import describe_device, pick_device


def measure_speed(
    name: str, device: str = "auto", batch_size: int = 8, img_size: int | None = None, seconds: float = 1.5
) -> dict:
    """Images per second for inference (forward) and for full training (forward + backward + AdamW step).

    Random weights and random pixels: speed does not depend on what the weights are. A warm-up step first, then as
    many steps as fit in `seconds` (at least two).
    """
    torch_device = pick_device(device)
    model = timm.create_model(name, pretrained=False, num_classes=10).to(torch_device)
    size = img_size or timm.data.resolve_model_data_config(model)["input_size"][-1]
    x = torch.randn(batch_size, 3, size, size, device=torch_device)
    y = torch.randint(0, 10, (batch_size,), device=torch_device)

    def rate(step) -> float:
        step()
        _sync(torch_device)
        count, start = 0, time.perf_counter()
        while count < 2 or time.perf_counter() - start < seconds:
            step()
            count += 1
        _sync(torch_device)
        return round(count * batch_size / (time.perf_counter() - start), 1)

    model.eval()
    with torch.no_grad():
        inference = rate(lambda: model(x))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    training = rate(train_step)
    return {
        "backbone": name,
        "img_size": size,
        "batch_size": batch_size,
        "device": describe_device(torch_device),
        "inference_images_per_second": inference,
        "training_images_per_second": training,
    }


def remembered_speeds() -> dict[str, dict]:
    """Speeds measured earlier on this device, by backbone name."""
    try:
        table = json.loads(_speed_file().read_text())
    except (OSError, ValueError):
        return {}
    return table.get(describe_device(), {})


def remember_speed(result: dict) -> None:
    path = _speed_file()
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    table.setdefault(result["device"], {})[result["backbone"]] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=2))
    tmp.replace(path)


def _speed_file():
    return settings.cache_dir() / "speeds.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()

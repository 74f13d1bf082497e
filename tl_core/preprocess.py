"""From cached uint8 squares to model input, on whatever device trains: centre crop or random augmentation,
then normalisation. Training, evaluation, prediction and Grad-CAM all go through `to_model_input`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.ops import roi_align


@dataclass(frozen=True)
class InputSpec:
    img_size: int  # what the model sees
    cache_size: int  # the cached square it is cut from (img_size / crop_pct)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_data_config(cls, data_config: dict, img_size: int | None = None) -> InputSpec:
        size = int(img_size or data_config["input_size"][-1])
        crop_pct = float(data_config.get("crop_pct") or 0.875)
        return cls(size, max(size, round(size / crop_pct)), tuple(data_config["mean"]), tuple(data_config["std"]))

    def to_dict(self) -> dict:
        return {
            "img_size": self.img_size,
            "cache_size": self.cache_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def to_model_input(
    images: torch.Tensor, spec: InputSpec, augment: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 N x 3 x cache x cache -> normalised float N x 3 x img x img."""
    x = images.float()
    if augment:
        x = random_resized_crop_flip(x, spec.img_size, generator)
        x = color_jitter(x, generator)
    else:
        offset = (x.shape[-1] - spec.img_size) // 2
        x = x[..., offset : offset + spec.img_size, offset : offset + spec.img_size]
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1) * 255.0
    return (x - mean) / std


def random_resized_crop_flip(
    x: torch.Tensor, size: int, generator: torch.Generator | None, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    """A different crop (area share and aspect ratio), resize and mirror for every image, in one batched op."""
    n, _, height, width = x.shape
    rand = torch.rand(n, 5, generator=generator)  # on the CPU: the same draws whatever the device
    area = height * width * (scale[0] + (scale[1] - scale[0]) * rand[:, 0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * rand[:, 1])
    crop_w = torch.sqrt(area * aspect).clamp(8, width)
    crop_h = torch.sqrt(area / aspect).clamp(8, height)
    x0 = (width - crop_w) * rand[:, 2]
    y0 = (height - crop_h) * rand[:, 3]
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), x0, y0, x0 + crop_w, y0 + crop_h], dim=1)
    out = roi_align(x, boxes.to(x.device, x.dtype), output_size=(size, size), sampling_ratio=2, aligned=True)
    flip = (rand[:, 4] < 0.5).to(x.device).view(n, 1, 1, 1)
    return torch.where(flip, out.flip(-1), out)


def color_jitter(x: torch.Tensor, generator: torch.Generator | None, strength: float = 0.2) -> torch.Tensor:
    """Per-image brightness and contrast changes of up to +-strength, on 0..255 values."""
    n = x.shape[0]
    rand = torch.rand(n, 2, generator=generator).to(x.device)
    brightness = 1 + strength * (2 * rand[:, 0] - 1)
    contrast = 1 + strength * (2 * rand[:, 1] - 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(n, 1, 1, 1) + mean
    return (x * brightness.view(n, 1, 1, 1)).clamp(0, 255)

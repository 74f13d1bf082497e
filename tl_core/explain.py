"""Grad-CAM: which parts of a picture made the model say what it said.

The class score's gradient with respect to the backbone's last feature map, averaged per channel, weights that map;
its positive part, upsampled to the picture, is the heat map. Works for convolutional networks (N x C x H x W
features) and for vision transformers (N x tokens x C, the patch tokens laid back on their grid).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tl_core.predict import Predictor


def grad_cam(predictor: Predictor, image: Image.Image, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """(heat map in 0..1 at the model's input size, the class it explains: the predicted one by default)."""
    model = predictor.model
    x = predictor.preprocess([image]).requires_grad_(True)  # gradients flow to the features, not the weights
    captured: list[torch.Tensor] = []
    layer = _token_layer(model)
    hook = layer.register_forward_hook(lambda _m, _i, out: captured.append(out)) if layer is not None else None
    try:
        with torch.enable_grad():
            features = model.forward_features(x)
            activations = captured[-1] if captured else features
            activations.retain_grad()
            logits = model.forward_head(features)
            target = int(logits.argmax(1)) if class_index is None else class_index
            logits[0, target].backward()
    finally:
        if hook is not None:
            hook.remove()
    grid, grads = _as_grid(model, activations.detach()), _as_grid(model, activations.grad)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * grid).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).cpu().numpy(), target


def overlay(image: Image.Image, heat: np.ndarray, size: int, alpha: float = 0.45) -> Image.Image:
    """The picture as the model saw it (centre square) with the heat map laid over it in warm colours."""
    from tl_core.images import square_crop

    base = square_crop(image.convert("RGB"), size).astype(np.float32)
    heat = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR))
    colour = _heat_colours(heat.astype(np.float32) / 255)
    weight = alpha * (heat.astype(np.float32) / 255)[..., None]
    return Image.fromarray(np.clip(base * (1 - weight) + colour * weight, 0, 255).astype(np.uint8))


def _token_layer(model) -> torch.nn.Module | None:
    """For a vision transformer, the last block's first norm: there the patch tokens still carry the evidence that
    the last attention moves into the class token (after the final norm, the head reads the class token alone, so the
    patch tokens' gradient is zero). None for a convolutional network: its last feature map is the place."""
    blocks = getattr(model, "blocks", None)
    if getattr(model, "num_prefix_tokens", None) is None or not isinstance(blocks, torch.nn.Sequential):
        return None
    return getattr(blocks[-1], "norm1", None)


def _as_grid(model, features: torch.Tensor) -> torch.Tensor:
    if features.ndim == 4:
        return features.float()
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    tokens = features[:, prefix:, :].float()
    side = int(math.isqrt(tokens.shape[1]))
    return tokens[:, : side * side].transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


def _heat_colours(values: np.ndarray) -> np.ndarray:
    """0 -> dark blue, 0.5 -> yellow, 1 -> red: a small 'jet'-like ramp without a plotting library."""
    r = np.clip(1.5 - np.abs(4 * values - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * values - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * values - 1), 0, 1)
    return np.stack([r, g, b], axis=-1) * 255

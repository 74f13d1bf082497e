"""Use a trained run: load its model once, then label new images with the same preprocessing it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from tl_core.backbones import build_model
from tl_core.errors import RunNotFoundError
from tl_core.images import UnusableImage, open_rgb, square_crop
from tl_core.preprocess import InputSpec, to_model_input
from tl_core.runs import read_json


@dataclass
class Predictor:
    model: nn.Module
    class_names: list[str]
    spec: InputSpec
    backbone: str
    device: torch.device
    mirror: bool = False  # average each picture's probabilities with its mirror image's (chosen on validation)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> Predictor:
        run_dir = Path(run_dir)
        config = read_json(run_dir / "config.json")
        class_names = read_json(run_dir / "labels.json")
        weights = run_dir / "model.safetensors"
        if not config or not class_names or "input" not in config:
            raise RunNotFoundError(f"'{run_dir}' is not a finished Headstart run (config.json or labels.json missing).")
        if not weights.exists():
            raise RunNotFoundError(f"'{run_dir}' has no trained weights (model.safetensors): that run saved none.")
        from safetensors.torch import load_file

        model = build_model(
            config["input"]["img_size"], config["backbone"], pretrained=False, num_classes=len(class_names)
        )
        model.load_state_dict(load_file(str(weights)))
        model.eval().requires_grad_(False).to(device)  # inference only; Grad-CAM differentiates the input
        spec = InputSpec(
            **{**config["input"], "mean": tuple(config["input"]["mean"]), "std": tuple(config["input"]["std"])}
        )
        mirror = bool((read_json(run_dir / "summary.json", {}) or {}).get("tta", {}).get("mirror"))
        return cls(model, class_names, spec, config["backbone"], torch.device(device), mirror)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images -> the normalised batch the model expects (the evaluation crop of training)."""
        squares = np.stack([square_crop(img, self.spec.cache_size) for img in images])
        return to_model_input(torch.from_numpy(squares).permute(0, 3, 1, 2).to(self.device), self.spec)

    @torch.no_grad()
    def probabilities(self, images: list[Image.Image]) -> np.ndarray:
        x = self.preprocess(images)
        probs = self.model(x).float().softmax(1)
        if self.mirror:
            probs = (probs + self.model(x.flip(-1)).float().softmax(1)) / 2
        return probs.cpu().numpy()

    def predict_images(self, images: list[Image.Image], top_k: int = 3) -> list[dict]:
        results = []
        for probs in self.probabilities(images):
            order = np.argsort(-probs)[: max(1, min(top_k, len(self.class_names)))]
            results.append(
                {
                    "label": self.class_names[order[0]],
                    "confidence": float(probs[order[0]]),
                    "top_k": [{"label": self.class_names[i], "confidence": float(probs[i])} for i in order],
                }
            )
        return results

    def predict_paths(self, paths: list[str | Path], top_k: int = 3) -> list[dict]:
        """One result per path; an unusable file gets an `error` sentence instead of a label, the rest go on."""
        results: list[dict] = []
        for path in paths:
            try:
                result = self.predict_images([open_rgb(path, draft_size=self.spec.cache_size)], top_k)[0]
            except UnusableImage as exc:
                result = {"label": None, "confidence": None, "top_k": [], "error": f"{Path(path).name}: {exc}"}
            results.append({"path": str(path), **result})
        return results

"""Use a trained run: load its model once, then label new images with the same preprocessing it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from tl_core.backbones import build_model
from tl_core.decision import calibrated_probabilities, decide
from tl_core.errors import RunNotFoundError
from tl_core.images import UnusableImage, open_rgb, square_crop
from tl_core.operating_point import read_rule
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
    temperature: float = 1.0  # calibration fitted on validation: softmax(log-probabilities / temperature)
    rule: dict | None = None  # the operating point (tl_core.decision): a threshold, or None for the likeliest class

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
        summary = read_json(run_dir / "summary.json", {}) or {}
        mirror = bool(summary.get("tta", {}).get("mirror"))
        temperature = float(summary.get("calibration", {}).get("temperature", 1.0))
        return cls(
            model, class_names, spec, config["backbone"], torch.device(device), mirror, temperature, read_rule(run_dir)
        )

    @classmethod
    def from_bundle(cls, path: str | Path, device: str = "cpu") -> Predictor:
        """The model of an exported bundle (its zip or unpacked folder): answers as `from_run` of its run does."""
        from tl_core.bundle import load_bundle

        return load_bundle(path, device)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images -> the normalised batch the model expects (the evaluation crop of training)."""
        squares = np.stack([square_crop(img, self.spec.cache_size) for img in images])
        return to_model_input(torch.from_numpy(squares).permute(0, 3, 1, 2).to(self.device), self.spec)

    def probabilities(self, images: list[Image.Image]) -> np.ndarray:
        """N x classes calibrated probabilities, as the run was validated (mirror images averaged in if chosen)."""
        return self.input_probabilities(self.preprocess(images))

    def input_probabilities(self, x: torch.Tensor) -> np.ndarray:
        """The same for a batch already preprocessed (N x 3 x img x img)."""
        return calibrated_probabilities(self.input_log_probabilities(x), self.temperature)

    @torch.no_grad()
    def input_log_probabilities(self, x: torch.Tensor) -> np.ndarray:
        """N x classes log-probabilities before calibration (mirror images averaged in if chosen): what the export
        checks ONNX against, since calibrated probabilities near 0 or 1 hide differences."""
        x = x.to(self.device)
        log_probs = self.model(x).float().log_softmax(1)
        if self.mirror:
            mirrored = self.model(x.flip(-1)).float().log_softmax(1)
            log_probs = torch.logsumexp(torch.stack([log_probs, mirrored]), 0) - np.log(2)
        return log_probs.cpu().numpy()

    def predict_images(self, images: list[Image.Image], top_k: int = 3) -> list[dict]:
        """label (under the run's operating point), confidence, sure, and the top_k likeliest classes."""
        probs = self.probabilities(images)
        results = []
        for row, answer in zip(probs, decide(probs, self.class_names, self.rule), strict=True):
            order = np.argsort(-row)[: max(1, min(top_k, len(self.class_names)))]
            top = [{"label": self.class_names[i], "confidence": float(row[i])} for i in order]
            results.append({**answer, "top_k": top})
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

"""The deployable bundle: one zip a person can take away and run without Headstart.

model.safetensors, labels.json, preprocessing.json, predict.py (needs only torch, timm, pillow, safetensors),
requirements.txt, summary.json and a model card (README.md).
"""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path

import timm

from tl_core.backbones import build_model
from tl_core.decision import calibrated_probabilities, decide
from tl_core.errors import RunNotFoundError
from tl_core.images import _high_depth_to_uint8, _to_rgb, square_crop
from tl_core.operating_point import read_rule
from tl_core.runs import load_run, read_json

_SCRIPT_HEAD = '''"""Label images with this exported Headstart model: python predict.py IMAGE [IMAGE ...]

Prints one JSON line per image. The image decoding and model building below are Headstart's own code, copied in,
so the pictures reach the model exactly as in training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file
from torch import nn

HERE = Path(__file__).parent
PRE = json.loads((HERE / "preprocessing.json").read_text())
LABELS = json.loads((HERE / "labels.json").read_text())
Image.MAX_IMAGE_PIXELS = None
'''

_SCRIPT_MAIN = """

def load_model():
    model = build_model(PRE["img_size"], PRE["backbone"], pretrained=False, num_classes=len(LABELS))
    model.load_state_dict(load_file(str(HERE / "model.safetensors")))
    return model.eval()


def preprocess(path) -> torch.Tensor:
    img = Image.open(path)
    if img.format == "JPEG":
        img.draft("RGB", (PRE["resize_to"], PRE["resize_to"]))
    img = _to_rgb(ImageOps.exif_transpose(img))
    square = square_crop(img, PRE["resize_to"])
    offset = (PRE["resize_to"] - PRE["img_size"]) // 2
    crop = square[offset : offset + PRE["img_size"], offset : offset + PRE["img_size"]]
    x = torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)
    mean = torch.tensor(PRE["mean"]).view(3, 1, 1) * 255
    std = torch.tensor(PRE["std"]).view(3, 1, 1) * 255
    return (x - mean) / std


def main(paths) -> int:
    model = load_model()
    for path in paths:
        try:
            x = preprocess(path)
        except Exception as exc:  # one unreadable file must not stop the others
            print(json.dumps({"path": path, "error": f"cannot read this image ({exc})"}))
            continue
        with torch.no_grad():
            log_probs = model(x[None]).log_softmax(1)
            if PRE.get("mirror_average"):
                mirrored = model(x[None].flip(-1)).log_softmax(1)
                log_probs = torch.logsumexp(torch.stack([log_probs, mirrored]), 0) - np.log(2)
        probs = calibrated_probabilities(log_probs.numpy(), PRE.get("temperature", 1.0))
        answer = decide(probs, LABELS, PRE.get("decision"))[0]
        top_k = [{"label": LABELS[i], "confidence": round(float(probs[0, i]), 6)} for i in np.argsort(-probs[0])[:3]]
        answer["confidence"] = round(answer["confidence"], 6)
        print(json.dumps({"path": path, **answer, "top_k": top_k}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
"""


def predict_script() -> str:
    """The bundle's standalone predict.py, built from the functions Headstart itself uses to decode and build."""
    shared = (_to_rgb, _high_depth_to_uint8, square_crop, build_model, calibrated_probabilities, decide)
    return _SCRIPT_HEAD + "".join("\n\n" + inspect.getsource(fn) for fn in shared) + _SCRIPT_MAIN


def export_bundle(run_dir: str | Path, out: Path) -> Path:
    """Write the bundle of `run_dir` to `out` (a .zip) and return its path."""
    run = load_run(run_dir)
    weights = run.run_dir / "model.safetensors"
    if not weights.exists():
        raise RunNotFoundError(f"Run '{run.id}' has no trained weights to export (it saved none before it ended).")
    spec = run.config["input"]
    mirror = bool(run.summary.get("tta", {}).get("mirror"))
    preprocessing = {
        "backbone": run.config["backbone"],
        "img_size": spec["img_size"],
        "resize_to": spec["cache_size"],
        "mean": spec["mean"],
        "std": spec["std"],
        "interpolation": "bicubic",
        "steps": [
            "decode to RGB, upright per EXIF, transparency on white",
            f"resize the shorter side to {spec['cache_size']} px (bicubic)",
            f"centre crop {spec['img_size']}x{spec['img_size']}",
            "scale to 0..1, subtract mean, divide by std (per channel)",
        ]
        + (
            ["predict on the picture and on its mirror image (left-right), average the probabilities"] if mirror else []
        ),
        "mirror_average": mirror,
        # probabilities = softmax(log-probabilities / temperature): the calibration fitted on validation
        "temperature": float(run.summary.get("calibration", {}).get("temperature", 1.0)),
        "decision": read_rule(run.run_dir),  # the operating point (tl_core.decision), or None for the likeliest
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(weights, "model.safetensors")
        zf.writestr("labels.json", json.dumps(run.class_names, indent=2))
        zf.writestr("preprocessing.json", json.dumps(preprocessing, indent=2))
        zf.writestr("summary.json", json.dumps(run.summary, indent=2, default=str))
        zf.writestr("predict.py", predict_script())
        zf.writestr("requirements.txt", f"torch\ntimm>={timm.__version__}\npillow\nsafetensors\n")
        zf.writestr("README.md", model_card(run.config, run.summary, run.class_names, run.run_dir))
    tmp.replace(out)
    return out


def model_card(config: dict, summary: dict, class_names: list[str], run_dir: Path) -> str:
    split = read_json(run_dir / "split.json", default={}) or {}
    counts: dict[str, dict[str, int]] = {}
    for row in split.get("files", []):
        counts.setdefault(row["label"], {}).setdefault(row["split"], 0)
        counts[row["label"]][row["split"]] += 1
    lines = [
        f"# Image classifier: {', '.join(class_names)}",
        "",
        f"Fine-tuned with Headstart from `{config['backbone']}` (weights: {summary.get('weights')}), "
        f"{summary.get('frozen_blocks')}/{summary.get('total_blocks')} backbone blocks frozen, "
        f"{summary.get('epochs_run')} epoch(s).",
        "",
        "## How good it is",
        f"- Validation accuracy: {_pct(summary.get('best_val_accuracy'))} on {summary.get('num_val')} images "
        f"(best epoch {summary.get('best_epoch')}).",
    ]
    tta = summary.get("tta") or {}
    if tta.get("mirror"):
        lines.append(
            f"- Each picture is labelled from itself and its mirror image together (test-time augmentation): "
            f"{_pct(tta['val_accuracy_mirrored'])} on validation against {_pct(tta['val_accuracy_plain'])} without."
        )
    if summary.get("test_accuracy") is not None:
        lines.append(f"- Test accuracy: {_pct(summary['test_accuracy'])} on {summary.get('num_test')} held-out images.")
    lines += ["", "## Data", "| class | train | val | test |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {counts.get(name, {}).get('train', 0)} | {counts.get(name, {}).get('val', 0)} | "
        f"{counts.get(name, {}).get('test', 0)} |"
        for name in class_names
    ]
    lines += [
        "",
        "## Use",
        "```",
        "pip install -r requirements.txt",
        "python predict.py photo.jpg",
        "```",
        "Input preprocessing is in `preprocessing.json`; class order in `labels.json`.",
        "",
        "## Limits",
        "It knows only the classes above and answers with one of them even for pictures of something else. "
        "Its accuracy holds for pictures like the ones it was trained on; check it on your own before relying on it.",
    ]
    return "\n".join(lines) + "\n"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"

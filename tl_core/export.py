"""The deployable bundle: one zip a person can take away and run without Headstart.

model.safetensors with predict.py (torch, timm, pillow, safetensors); model.onnx and model.int8.onnx with
predict_onnx.py (onnxruntime, numpy, pillow only); labels.json, preprocessing.json, requirements.txt,
requirements-onnx.txt, summary.json, export_report.json (the checks made at export) and a model card (README.md).
The ONNX graph must give PyTorch's answers on the run's validation pictures, or no zip is written.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import timm

from tl_core.backbones import build_model
from tl_core.decision import calibrated_probabilities, decide
from tl_core.errors import RunNotFoundError
from tl_core.images import _high_depth_to_uint8, _to_rgb, square_crop
from tl_core.onnx_predict import log_softmax, model_input, onnx_log_probabilities
from tl_core.operating_point import read_rule
from tl_core.runs import load_run, read_json

_SCRIPT_DOC = '''"""{doc}

Prints one JSON line per image (path, label, confidence, sure, top_k); an unreadable file gets an `error` line and
the others go on. The decoding and the turning of outputs into answers below are Headstart's own code, copied in,
so the pictures reach the model exactly as in training and the answers are the app's.
"""

from __future__ import annotations

{stdlib}import json
import sys
from pathlib import Path

'''

_SCRIPT_SETUP = """
HERE = Path(__file__).parent
PRE = json.loads((HERE / "preprocessing.json").read_text())
LABELS = json.loads((HERE / "labels.json").read_text())
Image.MAX_IMAGE_PIXELS = None
"""

_SCRIPT_SHARED = '''

def read_picture(path) -> np.ndarray:
    """The picture as the model's input (3 x img x img float32): decoded, upright, cropped as in training."""
    img = Image.open(path)
    if img.format == "JPEG":
        img.draft("RGB", (PRE["resize_to"], PRE["resize_to"]))
    img = _to_rgb(ImageOps.exif_transpose(img))
    return model_input(square_crop(img, PRE["resize_to"]), PRE["img_size"], PRE["mean"], PRE["std"])


def answer(path, log_probs) -> dict:
    """One line's content: the answer under the bundle's operating point, and the three likeliest classes."""
    probs = calibrated_probabilities(log_probs, PRE.get("temperature", 1.0))
    result = decide(probs, LABELS, PRE.get("decision"))[0]
    top_k = [{"label": LABELS[i], "confidence": round(float(probs[0, i]), 6)} for i in np.argsort(-probs[0])[:3]]
    return {"path": path, **result, "confidence": round(result["confidence"], 6), "top_k": top_k}


def label_all(paths, log_probabilities) -> int:
    for path in paths:
        try:
            x = read_picture(path)
        except Exception as exc:  # one unreadable file must not stop the others
            print(json.dumps({"path": path, "error": f"cannot read this image ({exc})"}))
            continue
        print(json.dumps(answer(path, log_probabilities(x[None]))))
    return 0
'''

_TORCH_IMPORTS = """import numpy as np
import timm
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file
from torch import nn
"""

_TORCH_MAIN = """

def load_model():
    model = build_model(PRE["img_size"], PRE["backbone"], pretrained=False, num_classes=len(LABELS))
    model.load_state_dict(load_file(str(HERE / "model.safetensors")))
    return model.eval()


def main(paths) -> int:
    model = load_model()

    @torch.no_grad()
    def log_probabilities(x: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(x)
        log_probs = model(x).log_softmax(1)
        if PRE.get("mirror_average"):
            mirrored = model(x.flip(-1)).log_softmax(1)
            log_probs = torch.logsumexp(torch.stack([log_probs, mirrored]), 0) - np.log(2)
        return log_probs.numpy()

    return label_all(paths, log_probabilities)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
"""

_ONNX_IMPORTS = """import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
"""

_ONNX_MAIN = """

def main(argv) -> int:
    parser = argparse.ArgumentParser(description="Label images with this model through ONNX Runtime.")
    parser.add_argument("images", metavar="IMAGE", nargs="+")
    parser.add_argument("--int8", action="store_true", help="use model.int8.onnx: smaller and faster, see README.md")
    args = parser.parse_args(argv)
    model = HERE / ("model.int8.onnx" if args.int8 else "model.onnx")
    if not model.is_file():
        print(f"{model.name} is not in this bundle: run without --int8, or export the model again.", file=sys.stderr)
        return 1
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    mirror = bool(PRE.get("mirror_average"))
    return label_all(args.images, lambda x: onnx_log_probabilities(session, x, mirror))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
"""

_DECODING = (_to_rgb, _high_depth_to_uint8, square_crop, model_input)
_ANSWERING = (calibrated_probabilities, decide)


def _script(doc: str, imports: str, functions: tuple, main: str, stdlib: str = "") -> str:
    copied = "".join("\n\n" + inspect.getsource(fn) for fn in functions)
    return _SCRIPT_DOC.format(doc=doc, stdlib=stdlib) + imports + _SCRIPT_SETUP + copied + _SCRIPT_SHARED + main


def predict_script() -> str:
    """The bundle's predict.py (PyTorch), built from the functions Headstart itself uses to decode and build."""
    doc = "Label images with this exported Headstart model: python predict.py IMAGE [IMAGE ...]"
    return _script(doc, _TORCH_IMPORTS, (*_DECODING, build_model, *_ANSWERING), _TORCH_MAIN)


def predict_onnx_script() -> str:
    """The bundle's predict_onnx.py: the same answers through ONNX Runtime, with no torch or timm."""
    doc = (
        "Label images with this exported Headstart model through ONNX Runtime (needs only onnxruntime, numpy and\n"
        "pillow): python predict_onnx.py [--int8] IMAGE [IMAGE ...]"
    )
    functions = (*_DECODING, log_softmax, onnx_log_probabilities, *_ANSWERING)
    return _script(doc, _ONNX_IMPORTS, functions, _ONNX_MAIN, stdlib="import argparse\n")


def preprocessing_of(run) -> dict:
    """preprocessing.json: everything a script needs to turn a file into the model's input and its output into
    an answer."""
    spec = run.config["input"]
    mirror = bool(run.summary.get("tta", {}).get("mirror"))
    return {
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


def export_bundle(run_dir: str | Path, out: Path, check_images: int | None = None) -> Path:
    """Write the bundle of `run_dir` to `out` (a .zip) and return its path. Raises ParityError, and writes nothing,
    when the ONNX model does not answer as the trained one on up to `check_images` validation pictures."""
    from tl_core.onnx_export import CHECK_IMAGES, onnx_files
    from tl_core.predict import Predictor

    run = load_run(run_dir)
    weights = run.run_dir / "model.safetensors"
    if not weights.exists():
        raise RunNotFoundError(f"Run '{run.id}' has no trained weights to export (it saved none before it ended).")
    preprocessing = preprocessing_of(run)
    predictor = Predictor.from_run(run.run_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_zip = out.with_name(out.name + ".tmp")
    with tempfile.TemporaryDirectory(prefix="headstart-export-") as folder:
        folder = Path(folder)
        report = onnx_files(predictor, run.run_dir, folder, check_images or CHECK_IMAGES)
        shutil.copyfile(weights, folder / "model.safetensors")
        models = [n for n in ("model.safetensors", "model.onnx", "model.int8.onnx") if (folder / n).exists()]
        report["files"] = {name: (folder / name).stat().st_size for name in models}
        texts = {
            "labels.json": json.dumps(run.class_names, indent=2),
            "preprocessing.json": json.dumps(preprocessing, indent=2),
            "summary.json": json.dumps(run.summary, indent=2, default=str),
            "export_report.json": json.dumps(report, indent=2, default=str),
            "predict.py": predict_script(),
            "predict_onnx.py": predict_onnx_script(),
            "requirements.txt": requirements(),
            "requirements-onnx.txt": onnx_requirements(),
            "README.md": model_card(run.config, run.summary, run.class_names, run.run_dir, report, preprocessing),
        }
        try:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name in models:
                    _add(zf, name, folder / name)
                for name, text in texts.items():
                    _add(zf, name, text.encode("utf-8"))
            tmp_zip.replace(out)
        finally:
            tmp_zip.unlink(missing_ok=True)
    return out


def _add(zf: zipfile.ZipFile, name: str, data: bytes | Path) -> None:
    """One entry that unpacks as an ordinary file, rw-r--r-- (writestr alone gives 0600 and `unzip` honours it)."""
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.create_system = 3  # Unix: the mode bits below are read by unzip and by Python's zipfile alike
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w") as entry:
        if isinstance(data, Path):
            with open(data, "rb") as source:
                shutil.copyfileobj(source, entry, 1 << 20)
        else:
            entry.write(data)


def onnx_requirements() -> str:
    import onnxruntime

    return f"onnxruntime>={onnxruntime.__version__}\nnumpy\npillow\n"


def requirements() -> str:
    return (
        "# predict.py (PyTorch, model.safetensors)\n"
        f"torch\ntimm>={timm.__version__}\nsafetensors\nnumpy\npillow\n"
        "# predict_onnx.py (ONNX Runtime, model.onnx / model.int8.onnx) needs only these three;\n"
        "# install just them with: pip install -r requirements-onnx.txt\n" + onnx_requirements()
    )


def model_card(
    config: dict,
    summary: dict,
    class_names: list[str],
    run_dir: Path,
    report: dict | None = None,
    preprocessing: dict | None = None,
) -> str:
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
        "## Intended use",
        f"Sorting pictures like the ones it was trained on into {len(class_names)} classes: "
        f"{', '.join(class_names)}. Each answer comes with how sure the model is.",
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
    lines += _per_class(run_dir)
    lines += _calibration(summary.get("calibration"), (preprocessing or {}).get("decision"))
    if report:
        lines += _deployment(report)
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
        "python predict.py photo.jpg            # PyTorch: model.safetensors",
        "python predict_onnx.py photo.jpg       # ONNX Runtime only (pip install -r requirements-onnx.txt)",
        "python predict_onnx.py --int8 photo.jpg",
        "```",
        "Each prints one JSON line per picture: `path`, `label`, `confidence`, `sure`, `top_k`. Input preprocessing "
        "is in `preprocessing.json`; class order in `labels.json`; the checks made at export in `export_report.json`. "
        "The ONNX models take `input` (N x 3 x size x size, float32, normalised) and give `logits`.",
        "",
        "## Limits",
        "It knows only the classes above and answers with one of them even for pictures of something else. "
        "Its accuracy holds for pictures like the ones it was trained on; check it on your own before relying on it. "
        "The figures above come from the validation pictures, a small sample: with a few dozen of them, one picture "
        "more or less right moves the accuracy by a few points.",
    ]
    return "\n".join(lines) + "\n"


def _per_class(run_dir: Path) -> list[str]:
    from tl_core.metrics import evaluate_run

    try:
        evaluation = evaluate_run(run_dir)
    except (RunNotFoundError, KeyError, ValueError):
        return []
    names = evaluation.class_names
    lines = ["", "Per class, on the validation pictures:", "", "| class | precision | recall | F1 | pictures |"]
    lines.append("|---|---|---|---|---|")
    for row in evaluation.per_class:
        lines.append(
            f"| {row['class']} | {_num(row['precision'])} | {_num(row['recall'])} | {_num(row['f1'])} | "
            f"{row['support']} |"
        )
    lines += ["", "Confusion matrix (rows: true class, columns: what the model said):", ""]
    lines.append("| true \\ said | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for name, row in zip(names, evaluation.confusion, strict=True):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    return lines


def _calibration(calibration: dict | None, rule: dict | None) -> list[str]:
    lines = []
    if calibration:
        lines += [
            "",
            "## How sure it is",
            f"Its confidences are calibrated by temperature scaling on {calibration.get('num_images')} validation "
            f"pictures (temperature {calibration['temperature']:.3g}): expected calibration error "
            f"{_pct(calibration.get('ece_before'))} before, {_pct(calibration.get('ece_after'))} after (the gap "
            "between how sure it says it is and how often it is right; lower is better).",
        ]
    if rule and rule.get("kind") == "binary":
        lines += [
            "",
            f"Operating point: '{rule['positive']}' whenever its probability reaches {_pct(rule['threshold'])}, "
            "otherwise the other class (chosen on validation; predict.py and predict_onnx.py follow it).",
        ]
    elif rule and rule.get("kind") == "not_sure_below":
        lines += [
            "",
            f"Operating point: an answer under {_pct(rule['threshold'])} confidence is marked not sure "
            "(`sure: false`, the label is the best guess); predict.py and predict_onnx.py follow it.",
        ]
    return lines


def _deployment(report: dict) -> list[str]:
    checked, onnx, int8 = report["checked_on"], report["onnx"], report["int8"]
    acc, ms, files = report["accuracy"], report["ms_per_picture"], report.get("files", {})
    where = (
        f"{checked['pictures']} of the {checked['of']} validation pictures"
        if checked["source"] == "validation"
        else f"{checked['pictures']} generated pictures (the run's own were no longer on disk)"
    )
    lines = [
        "",
        "## The model files",
        f"Checked at export on {where}; speed on {report['machine']}, one picture at a time ({ms['note']}).",
        "",
        "| file | size | ms per picture | accuracy on the checked pictures |",
        "|---|---|---|---|",
        f"| model.safetensors (PyTorch) | {_mb(files.get('model.safetensors'))} | {ms['pytorch']:.1f} | "
        f"{_pct(acc['pytorch'])} |",
        f"| model.onnx (fp32) | {_mb(files.get('model.onnx'))} | {ms['onnx']:.1f} | {_pct(acc['onnx'])} |",
    ]
    if int8.get("made"):
        lines.append(
            f"| model.int8.onnx | {_mb(files.get('model.int8.onnx'))} | {ms['int8']:.1f} | {_pct(acc['int8'])} |"
        )
    lines += [
        "",
        f"- model.onnx gives the PyTorch model's probabilities within {onnx['max_probability_difference']:.1g} "
        f"(at most {onnx['tolerance']:.0e} allowed; log-probabilities within "
        f"{onnx['max_log_probability_difference']:.1g}, at most {onnx['log_tolerance']:.0e}) and its label on all "
        f"{onnx['labels_agree']} pictures "
        f"({onnx['exporter']}).",
    ]
    if int8.get("made"):
        lines.append(
            f"- model.int8.onnx ({int8['method']}) gives the PyTorch model's label on {int8['labels_agree']} of "
            f"{checked['pictures']} pictures ({_pct(int8['label_agreement'])}); its probabilities differ by up to "
            f"{int8['max_probability_difference']:.2g}. {int8['why'][:1].upper() + int8['why'][1:]}."
            + ("" if int8["label_agreement"] == 1 else " Where every answer matters, use model.onnx.")
        )
    else:
        lines.append(f"- No int8 model: {int8.get('why')}.")
    return lines


def _mb(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 1024**2:.1f} MB"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"

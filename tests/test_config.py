"""One meaning per setting: the freeze plan decides augmentation and caching, and the CLI is derived from TrainConfig."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tl_core.cli import _parser
from tl_core.config import TrainConfig
from tl_core.freezing import backbone_structure
from tl_core.training import train


def test_freezing_every_block_by_number_is_freeze_all(digits_dir, tmp_path):
    total = backbone_structure("tf_efficientnet_lite0", 10).total_blocks
    summaries = [
        train(
            TrainConfig(
                str(digits_dir), weights="offline", freeze=freeze, epochs=1, img_size=64, runs_dir=str(tmp_path)
            )
        )
        for freeze in ("all", str(total), total)
    ]
    configs = [json.loads((Path(s["run_dir"]) / "config.json").read_text()) for s in summaries]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0]["freeze"] == "all" and configs[0]["augment"] == "off" and configs[0]["feature_cache"]
    assert all(s["feature_cache"] and s["frozen_blocks"] == total for s in summaries)


def test_resolved_settings_follow_the_plan():
    plan = backbone_structure("test_efficientnet", 2)
    total = plan.total_blocks
    frozen_top = TrainConfig("x", freeze=total - 1).resolved(plan.at_depth(total - 1), 32)
    assert (frozen_top.freeze, frozen_top.augment, frozen_top.feature_cache) == (str(total - 1), "on", False)
    assert (frozen_top.lr, frozen_top.img_size, frozen_top.probe) == (3e-5, 32, True)  # LP-FT's small steps
    from_zero = TrainConfig("x", freeze=total - 1, probe=False).resolved(plan.at_depth(total - 1), 32)
    assert (from_zero.lr, from_zero.probe) == (1e-3, False)
    scratch = TrainConfig("x", freeze=total - 1, weights="none").resolved(plan.at_depth(total - 1), 32)
    assert (scratch.lr, scratch.probe) == (1e-3, False)  # random features: no probe to start from
    everything = TrainConfig("x", freeze="none", augment="off").resolved(plan.at_depth(0), 32)
    assert (everything.freeze, everything.augment, everything.feature_cache) == ("none", "off", False)
    asked_on = TrainConfig("x", augment="on").resolved(plan.at_depth("all"), 32)
    assert (asked_on.augment, asked_on.feature_cache) == ("on", False)  # augmented pictures need the backbone


def test_every_setting_is_a_cli_option_with_the_config_default():
    parser = _parser()
    args = parser.parse_args(["train", "photos"])
    defaults = TrainConfig.defaults()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "resume":  # its own command: `resume RUN_DIR` takes every other setting from the run folder
            assert parser.parse_args(["resume", "runs/x"]).run_dir == "runs/x"
            continue
        assert f.name in vars(args), f"--{f.name.replace('_', '-')} is missing from the CLI"
        if f.name != "data_dir":
            assert getattr(args, f.name) == defaults[f.name], f.name
    args = parser.parse_args(
        [
            "train",
            "photos",
            "--weight-decay",
            "0.1",
            "--warmup-epochs",
            "2",
            "--compile",
            "--no-feature-cache",
            "--freeze",
            "3",
            "--lr",
            "0.01",
        ]
    )
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name in args})
    assert (config.weight_decay, config.warmup_epochs, config.compile, config.feature_cache) == (0.1, 2.0, True, False)
    assert (config.freeze, config.lr) == ("3", 0.01)


@pytest.mark.parametrize(
    ("field", "value", "sentence"),
    [("epochs", 0, "Epochs must be at least 1"), ("freeze", "most", "Freeze takes all, none or a number")],
)
def test_bad_settings_are_refused_with_a_sentence(field, value, sentence):
    with pytest.raises(ValueError, match=sentence):
        TrainConfig("photos", **{field: value})


def test_a_config_survives_the_trip_through_the_command_line():
    from tl_core.cli import config_argv

    config = TrainConfig("photos", freeze="3", lr=0.01, compile=True, feature_cache=False, layer_decay=0.75)
    args = _parser().parse_args(["train", *config_argv(config)])
    assert (
        TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name in args})
        == config
    )

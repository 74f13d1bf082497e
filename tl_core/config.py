"""TrainConfig: every setting of a training run, its default and its help, in one place.

The CLI's options and the web app's widgets are both derived from these fields (`cli.add_config_options`,
`TrainConfig.defaults()`), so a setting exists, with one default, everywhere at once.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tl_core import settings
from tl_core.data import DEFAULT_VAL_FRACTION

if TYPE_CHECKING:
    from tl_core.freezing import FreezePlan

DEVICES = ("auto", "cpu", "cuda", "mps")
AUGMENT_CHOICES = ("auto", "on", "off")
TTA_CHOICES = ("auto", "on", "off")
STRATEGIES = ("manual", "auto")
DEFAULT_LR = 1e-3
# Fine-tuning that starts from the fitted head: its gradients reach the backbone from the first step, so AdamW's
# steps must be small or they tear the pretrained features apart (1e-3 lost 50 points in the first epoch, 3e-5 gained
# over the zero head's default on solar-cell scans: docs/BENCHMARKS.md).
LPFT_LR = 3e-5


def _option(help: str, **argparse_extra) -> dict:
    """Field metadata: the help a person reads (CLI and page), plus anything argparse needs beyond the type."""
    return {"help": help, **argparse_extra}


@dataclass
class TrainConfig:
    data_dir: str = field(metadata=_option("folder (or .zip) with one sub-folder per class, or train/ and val/"))
    backbone: str = field(default="tf_efficientnet_lite0", metadata=_option("a timm model name", metavar="NAME"))
    weights: str = field(
        default="auto",
        metadata=_option(
            "auto: the hub if reachable, else the offline package; none trains from random weights",
            metavar="auto|hub|offline|none|PATH",
        ),
    )
    freeze: str | int = field(
        default="all",
        metadata=_option(
            "all: only the new head trains; none: everything trains; K: the first K blocks stay frozen",
            metavar="all|none|K",
        ),
    )
    strategy: str = field(
        default="manual",
        metadata=_option(
            "manual: train as the other options say; auto: the fitted head first, then fine-tuning as deep and as "
            "long as the time budget allows, keeping the better model",
            choices=STRATEGIES,
        ),
    )
    budget: str | None = field(
        default=None,
        metadata=_option(
            "with --strategy auto: about how long, e.g. 90s, 10m, 1h; 'best' for no limit", metavar="TIME"
        ),
    )
    epochs: int = field(default=10, metadata=_option("passes over the training pictures"))
    batch_size: int = field(default=32, metadata=_option("pictures per training step"))
    lr: float | None = field(
        default=None,
        metadata=_option(
            f"peak learning rate (default {DEFAULT_LR:g} from a zero head, which takes 3x that; {LPFT_LR:g} when "
            "blocks fine-tune from the fitted head)"
        ),
    )
    img_size: int | None = field(default=None, metadata=_option("square input size (default: the backbone's own)"))
    val_split: float = field(default=DEFAULT_VAL_FRACTION, metadata=_option("share of each class kept for validation"))
    test_split: float = field(default=0.0, metadata=_option("share of each class kept for a final test"))
    seed: int = field(default=0, metadata=_option("same seed, same split, same result"))
    train_share: float = field(
        default=1.0,
        metadata=_option(
            "train on this share of each class's training pictures (e.g. 0.25); validation stays whole, so runs on "
            "different shares compare (the data-efficiency curve)",
            metavar="F",
        ),
    )
    device: str = field(default="auto", metadata=_option("where to train", choices=DEVICES))
    processes: int = field(
        default=1,
        metadata=_option(
            "processes that train together, one per GPU (DDP under torchrun; on a CPU, 2 share its cores); 1 trains in "
            "this process",
            metavar="N",
        ),
    )
    runs_dir: str = field(
        default_factory=lambda: str(settings.runs_dir()), metadata=_option("where run folders go", metavar="DIR")
    )
    augment: str = field(
        default="auto",
        metadata=_option("random crops and flips; auto: on when backbone blocks train", choices=AUGMENT_CHOICES),
    )
    tta: str = field(
        default="auto",
        metadata=_option(
            "test-time augmentation: predict from each picture and its mirror image together; auto: only if that "
            "does better on the validation pictures",
            choices=TTA_CHOICES,
        ),
    )
    label_smoothing: float = field(default=0.1, metadata=_option("keeps the model from over-confidence"))
    class_balanced: bool = field(default=False, metadata=_option("weight the loss so small classes count as much"))
    weight_decay: float = field(default=0.05, metadata=_option("AdamW weight decay (not on biases and norms)"))
    warmup_epochs: float = field(default=1.0, metadata=_option("epochs over which the learning rate grows"))
    early_stopping: int = field(
        default=5, metadata=_option("epochs without a better validation loss before stopping; 0: off", metavar="N")
    )
    layer_decay: float | None = field(
        default=None, metadata=_option("e.g. 0.75: each block further from the head learns 0.75x as fast")
    )
    feature_cache: bool = field(
        default=True, metadata=_option("with the whole backbone frozen and no augmentation, compute features once")
    )
    probe: bool = field(
        default=True,
        metadata=_option(
            "fit the new head to its optimum on the pretrained features (L-BFGS, its regularisation by "
            "cross-validation): with the backbone frozen that is the whole training; when blocks train, they start "
            "from it (linear probe, then fine-tune)"
        ),
    )
    head_lr_scale: float = field(
        default=3.0, metadata=_option("when backbone blocks train, the new head learns this many times faster")
    )
    compile: bool = field(default=False, metadata=_option("torch.compile the model (CUDA only: pays on long runs)"))
    resume: str | None = field(
        default=None, metadata={"help": "the folder of a run that was cut off, to continue from its last epoch"}
    )  # not a `train` option: `python -m tl_core resume RUN_DIR` builds the whole config from the run folder

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"{name.replace('_', ' ').capitalize()} must be at least 1, not {getattr(self, name)}."
                )
        if self.img_size is not None and self.img_size < 16:
            raise ValueError(f"The image size must be at least 16 pixels, not {self.img_size}.")
        freeze = str(self.freeze)
        if freeze not in ("all", "none") and not freeze.isdigit():
            raise ValueError(f"Freeze takes all, none or a number of blocks, not '{self.freeze}'.")
        if self.augment not in AUGMENT_CHOICES:
            raise ValueError(f"Augmentation is auto, on or off, not '{self.augment}'.")
        if self.tta not in TTA_CHOICES:
            raise ValueError(f"Test-time augmentation is auto, on or off, not '{self.tta}'.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"The strategy is manual or auto, not '{self.strategy}'.")
        if self.strategy == "auto":
            from tl_core.auto import parse_budget

            parse_budget(self.budget)  # a sentence now rather than a failure after the first model
        if not 0 < float(self.train_share) <= 1:
            raise ValueError(f"The share of training pictures must be above 0 and at most 1, not {self.train_share}.")
        if int(self.processes) < 1:
            raise ValueError(f"The number of processes must be at least 1, not {self.processes}.")
        if int(self.processes) > int(self.batch_size):
            raise ValueError(
                f"The batch size ({self.batch_size}) is shared out between the {self.processes} processes: make it at "
                "least as large."
            )
        if int(self.processes) > 1 and self.strategy == "auto":
            raise ValueError(
                "Auto decides as it trains from the time each step takes, so it trains in one process; choose a "
                "strategy by hand to train on several GPUs."
            )
        if self.device not in DEVICES:
            raise ValueError(f"The device is one of {', '.join(DEVICES)}, not '{self.device}'.")

    @classmethod
    def defaults(cls) -> dict:
        """Every field's default (data_dir has none)."""
        return {
            f.name: f.default if f.default_factory is MISSING else f.default_factory()
            for f in fields(cls)
            if f.default is not MISSING or f.default_factory is not MISSING
        }

    def resolved(self, plan: FreezePlan, img_size: int) -> TrainConfig:
        """The settings as they will run: one meaning per choice, whatever words chose it.

        The freeze plan decides: freezing every block is 'all' however it was asked for; augmentation 'auto' is on
        only when backbone blocks train; the feature cache applies only to a frozen backbone without augmentation,
        and there the probe, when on, is the whole training (one fit, no epochs).
        """
        head_only = plan.frozen_blocks == plan.total_blocks
        augment = self.augment == "on" or (self.augment == "auto" and not head_only)
        freeze = "all" if head_only else "none" if plan.frozen_blocks == 0 else str(plan.frozen_blocks)
        feature_cache = self.feature_cache and head_only and not augment
        # On a frozen backbone the probe is simply the best head; before fine-tuning it is where the head starts,
        # which random (untrained) features do not make worth it.
        probe = self.probe and (feature_cache or self.weights != "none")
        return replace(
            self,
            freeze=freeze,
            augment="on" if augment else "off",
            lr=self.lr if self.lr is not None else LPFT_LR if probe and not head_only else DEFAULT_LR,
            img_size=img_size,
            feature_cache=feature_cache,
            probe=probe,
            epochs=1 if feature_cache and probe else self.epochs,  # the fitted head is the whole training
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_resume(cls, run_dir: str | Path) -> TrainConfig:
        """The settings a cut-off run was started with (its config.json), set to continue in its folder."""
        try:
            saved = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ValueError(f"'{run_dir}' is not a Headstart run folder (it has no readable config.json).") from None
        names = {f.name for f in fields(cls)}
        # in one process, whatever it had: its steps are the same (tl_core.distributed), and it needs no torchrun
        return cls(**{**{k: v for k, v in saved.items() if k in names}, "resume": str(run_dir), "processes": 1})

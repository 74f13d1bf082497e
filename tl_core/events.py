"""What a training run tells its listeners, as typed events: defined once, read by the job manager and the CLI.

Each event is a small frozen dataclass. `record()` is its line in the run folder's metrics.jsonl: the fields plus
`event` (its kind) and `time`, so the file stays readable by anything that reads JSON.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

# The stages before the first training step, and what a person is told while each runs.
STAGE_LABELS = {
    "scan": "Checking the pictures",
    "decode": "Decoding the pictures once (kept for the next runs)",
    "features": "Computing the backbone's features once (kept for the next runs)",
    "probe": "Fitting the new head to its optimum (cross-validation on the training pictures)",
    "train": "Training",
}


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = ""

    def record(self) -> dict:
        return {"event": self.kind, "time": round(time.time(), 3), **asdict(self)}


@dataclass(frozen=True)
class Created(Event):
    """The run folder exists; everything from here on is written into it."""

    kind: ClassVar[str] = "created"
    run_dir: str


@dataclass(frozen=True)
class Progress(Event):
    """A preparation stage (see STAGE_LABELS) has done `done` of `total` pictures."""

    kind: ClassVar[str] = "progress"
    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class Started(Event):
    """Data, model and freezing are ready: what is about to train, on what."""

    kind: ClassVar[str] = "start"
    backbone: str
    weights: str
    device: str
    num_classes: int
    class_names: list[str]
    num_train: int
    num_val: int
    frozen_blocks: int
    total_blocks: int
    trainable_params: int
    total_params: int
    device_name: str
    feature_cache: bool
    augment: bool
    input: dict


# The summary fields known once a run has started; a run that failed before has them as None.
START_FIELDS = tuple(f.name for f in fields(Started))


@dataclass(frozen=True)
class Schedule(Event):
    """The learning rate of every step of the run, as planned before the first one."""

    kind: ClassVar[str] = "schedule"
    lrs: list[float]


@dataclass(frozen=True)
class FeatureCache(Event):
    """The frozen backbone's features: `hit` when they came from the disk cache."""

    kind: ClassVar[str] = "feature_cache"
    hit: bool
    dim: int

    @property
    def text(self) -> str:
        if self.hit:
            return "Backbone features came from the cache: only the head trains."
        return "Backbone features computed once and cached: the next run on these images skips this step."


@dataclass(frozen=True)
class Step(Event):
    kind: ClassVar[str] = "step"
    epoch: int
    step: int
    epoch_step: int
    steps_per_epoch: int
    total_steps: int
    loss: float
    lr: float
    images_per_second: float
    eta_seconds: float


@dataclass(frozen=True)
class EpochEnd(Event):
    kind: ClassVar[str] = "epoch"
    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    images_per_second: float
    best: bool  # the best weights so far: saved


@dataclass(frozen=True)
class Message(Event):
    kind: ClassVar[str] = "message"
    text: str
    level: str = "info"


@dataclass(frozen=True)
class Ended(Event):
    """The run is over; `summary` is what summary.json holds."""

    kind: ClassVar[str] = "end"
    summary: dict

    def record(self) -> dict:
        return {"event": self.kind, "time": round(time.time(), 3), **self.summary}


_KINDS = {cls.kind: cls for cls in (Created, Progress, Started, Schedule, FeatureCache, Step, EpochEnd, Message, Ended)}


def from_record(record: dict) -> Event | None:
    """The event a metrics.jsonl line (or a training process's `--events` output) records; None for other lines."""
    kind = _KINDS.get(record.get("event"))
    if kind is None:
        return None
    fields_of = {k: v for k, v in record.items() if k not in ("event", "time")}
    if kind is Ended:
        return Ended(fields_of)
    names = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in fields_of.items() if k in names})

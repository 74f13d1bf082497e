"""The run folder: everything a training run learns, written to disk as it happens.

runs/<id>/
  config.json        what was asked for (and the resolved input spec)
  labels.json        class names, in the model's output order
  split.json         which file is in which split, what was skipped and why
  metrics.jsonl      one JSON event per line, appended and flushed while training
  model.safetensors  the best weights so far
  predictions.csv    validation set: path, true, predicted, confidence (of the best weights)
  checkpoint.pt      the last finished epoch (model, optimiser, counters, random states), so a run cut off
                     can resume; removed when the run ends normally
  summary.json       the outcome; absent while training
  .lock              held (flock) by the process that trains; a run with no summary whose lock is free was cut off
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tl_core.errors import RunNotFoundError
from tl_core.events import START_FIELDS

try:
    import fcntl
except ImportError:  # Windows: fall back to the process id
    fcntl = None


@dataclass
class RunInfo:
    run_dir: Path
    status: str  # running, finished, stopped, failed, interrupted
    config: dict
    summary: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.run_dir.name

    @property
    def has_model(self) -> bool:
        return (self.run_dir / "model.safetensors").exists()

    @property
    def can_resume(self) -> bool:
        """Cut off after a finished epoch: its checkpoint lets it go on from there."""
        return self.status in ("interrupted", "failed") and (self.run_dir / "checkpoint.pt").exists()

    @property
    def class_names(self) -> list[str]:
        return read_json(self.run_dir / "labels.json", default=[])

    @property
    def strategy(self) -> str:
        """What kind of training this was, in the words of the Train page."""
        from tl_core.freezing import top_third_frozen

        config, summary = self.config, self.summary
        if summary.get("auto"):
            return f"Auto ({config.get('budget') or 'best'})"
        if config.get("weights") == "none":
            words = "From scratch"
        else:
            frozen, total = summary.get("frozen_blocks"), summary.get("total_blocks")
            freeze = str(config.get("freeze"))
            if freeze == "all" or (total and frozen == total):
                words = "Feature extraction"
            elif freeze == "none" or frozen == 0:
                words = "Fine-tune all"
            elif total and frozen == top_third_frozen(total):
                words = "Fine-tune the top"
            else:
                words = f"Fine-tune {total - frozen} of {total} blocks" if total else "Fine-tune"
        share = config.get("train_share", 1.0)
        return words if share == 1.0 else f"{words}, {share:.0%} of the pictures"

    @property
    def title(self) -> str:
        """'Fine-tune the top · EfficientNet-Lite0 · leaves-v2 · 1 Dec 14:05': what the run was; the id stays the
        folder's name."""
        from tl_core.backbones import label_for

        when = time.strptime(self.id[:15], "%Y%m%d-%H%M%S") if self.id[:15].replace("-", "").isdigit() else None
        parts = [
            self.strategy,
            label_for(self.summary.get("backbone") or self.config.get("backbone", "?")),
            data_name(self.config.get("data_dir", "?")),
        ]
        if when:
            parts.append(time.strftime("%-d %b %H:%M", when))
        return " · ".join(parts)


def data_name(data_dir: str | Path) -> str:
    """A data set's name as its person knows it: an uploaded folder is kept under an id (uploads/<id>/<its name>),
    a zip by its file name."""
    path = Path(str(data_dir))
    if path.parent.name == "uploads":
        with contextlib.suppress(OSError):
            inside = [d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
            if len(inside) == 1:
                return inside[0]
    return path.stem if path.suffix.lower() == ".zip" else path.name


class RunWriter:
    """Creates a run folder (or reopens one that was cut off) and writes into it; holds the folder's lock until
    closed."""

    def __init__(self, runs_dir: str | Path, backbone: str, reopen: Path | None = None):
        if reopen is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone)[:40]
            self.run_dir = Path(runs_dir) / f"{stamp}-{slug}-{secrets.token_hex(2)}"
            self.run_dir.mkdir(parents=True, exist_ok=False)
        else:
            self.run_dir = Path(reopen)
        self._lock = open(self.run_dir / ".lock", "a+")  # noqa: SIM115 - held for the run's lifetime
        if fcntl:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                raise RunNotFoundError(f"Run '{self.run_dir.name}' is still training: it cannot be resumed.") from None
        self.opened_at = time.time()  # events logged from now on are this attempt's
        self._lock.truncate(0)
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    @classmethod
    def reopen(cls, run_dir: str | Path) -> RunWriter:
        """The folder of a run that was cut off (or failed), to continue in; refused for one that ended normally."""
        run = load_run(run_dir)
        if run.status in ("finished", "stopped"):
            raise RunNotFoundError(f"Run '{run.id}' {run.status} normally: there is nothing to resume.")
        writer = cls(run.run_dir.parent, run.config.get("backbone", ""), reopen=run.run_dir)
        (run.run_dir / "summary.json").unlink(missing_ok=True)  # training again: no outcome yet
        return writer

    def trim_metrics(self, keep) -> None:
        """Rewrite metrics.jsonl with only the events `keep(event)` accepts (a resumed run drops what it redoes)."""
        path = self.run_dir / "metrics.jsonl"
        self._metrics.close()
        try:
            text = "".join(json.dumps(e) + "\n" for e in read_metrics(self.run_dir) if keep(e))
            replace_atomically(path, lambda f: f.write(text.encode("utf-8")))
        finally:
            self._metrics = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def save_checkpoint(self, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        replace_atomically(self.run_dir / "checkpoint.pt", lambda f: f.write(buffer.getbuffer()))

    def write_json(self, name: str, payload) -> None:
        write_json_atomic(self.run_dir / name, payload)

    def log(self, event: dict) -> None:
        self._metrics.write(json.dumps(event, default=_jsonable) + "\n")
        self._metrics.flush()

    def save_weights(self, model: torch.nn.Module) -> None:
        from safetensors.torch import save

        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        replace_atomically(self.run_dir / "model.safetensors", lambda f: f.write(save(state)))

    def write_predictions(
        self, rows: list[tuple[str, str, str, float]], class_names: list[str] | None = None, probabilities=None
    ) -> None:
        """predictions.csv; with `probabilities` (N x classes), a column 'p(<class>)' per class after the four."""
        extra = [f"p({name})" for name in class_names] if probabilities is not None else []

        def write(f) -> None:
            lines = [["path", "true", "predicted", "confidence", *extra]] + [
                [p, t, pr, f"{c:.6f}", *([f"{v:.6f}" for v in probabilities[i]] if extra else [])]
                for i, (p, t, pr, c) in enumerate(rows)
            ]
            buffer = io.StringIO()
            csv.writer(buffer).writerows(lines)
            f.write(buffer.getvalue().encode("utf-8"))

        replace_atomically(self.run_dir / "predictions.csv", write)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # its last lines could not be written (disk full): unlock all the same
            self._metrics.close()
        if fcntl:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()


def replace_atomically(path: Path, write: Callable) -> None:
    """`write(binary file)` into a temporary file, then put it in `path`'s place: a reader sees the old file or the
    new one, never half of one; a write that fails (disk full) leaves the old file and no leftover."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc  # the file the person knows, not the .tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, payload) -> None:
    text = json.dumps(payload, indent=2, default=_jsonable)
    replace_atomically(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All events so far; a half-written last line (the process died mid-write) is ignored."""
    events = []
    try:
        with open(Path(run_dir) / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return events


def is_locked(run_dir: Path) -> bool:
    """Whether some process (this one included) is still training into `run_dir`."""
    lock_path = run_dir / ".lock"
    if not lock_path.exists():
        return False
    if fcntl is None:
        try:
            pid = int(lock_path.read_text().strip() or 0)
            os.kill(pid, 0)
            return True
        except (ValueError, OSError):
            return False
    with open(lock_path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def load_run(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if config is None:
        raise RunNotFoundError(f"'{run_dir}' is not a Headstart run folder (it has no readable config.json).")
    summary = read_json(run_dir / "summary.json", default={})
    if summary:
        return RunInfo(run_dir, summary.get("status", "finished"), config, summary)
    if is_locked(run_dir):
        return RunInfo(run_dir, "running", config, {})
    return RunInfo(run_dir, "interrupted", config, mark_interrupted(run_dir, config))


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Every run under `runs_dir`, newest first; unreadable folders are passed over."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for run_dir in sorted(runs_dir.iterdir(), reverse=True):
        if run_dir.is_dir() and (run_dir / "config.json").exists():
            try:
                found.append(load_run(run_dir))
            except RunNotFoundError:
                continue
    return found


def build_summary(run_dir: str | Path, status: str, start: dict, history: list[dict], message: str, **extra) -> dict:
    """What summary.json holds, for every way a run can end: from its start facts and its epoch records.

    `start` holds the START_FIELDS (absent ones are None: the run ended before they were known); `history` is one
    record per finished epoch with at least val_accuracy, val_loss and train_loss. The best epoch is the one with
    the highest validation accuracy, the lower loss breaking ties (the one whose weights were kept).
    """
    best = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]), default=None)
    last = history[-1] if history else {}
    return {
        **{k: start.get(k) for k in START_FIELDS},
        "run_dir": str(run_dir),
        "status": status,
        "epochs_run": len(history),
        "val_accuracy": last.get("val_accuracy"),
        "best_val_accuracy": best["val_accuracy"] if best else None,
        "best_epoch": best["epoch"] if best else 0,
        "val_loss": last.get("val_loss"),
        "train_loss": last.get("train_loss"),
        "train_images_per_second": 0.0,
        "message": message,
        **extra,
    }


def summary_from_log(run_dir: Path, status: str, message: str, config: dict) -> dict:
    """The summary of a run that ended abnormally, from what its metrics say it reached."""
    events = read_metrics(run_dir)
    start = next((e for e in events if e.get("event") == "start"), {"backbone": config.get("backbone")})
    history = [e for e in events if e.get("event") == "epoch"]
    kept = (
        "The best weights up to then are kept."
        if (run_dir / "model.safetensors").exists()
        else "No weights were saved."
    )
    return build_summary(run_dir, status, start, history, f"{message} {kept}")


def mark_interrupted(run_dir: Path, config: dict) -> dict:
    """Write the summary of a run that was cut off."""
    message = "The process stopped before this run ended (closed, killed or crashed)."
    summary = summary_from_log(run_dir, "interrupted", message, config)
    with contextlib.suppress(OSError):  # a full or read-only disk: shown as interrupted all the same
        write_json_atomic(run_dir / "summary.json", summary)
    return summary


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

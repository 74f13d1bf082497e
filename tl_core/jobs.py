"""Training in the background: one worker thread per device, a queue in front of each, cheap progress snapshots.

The UI (or any caller) submits a TrainConfig and gets a Job; `job.snapshot()` is safe to read from any thread at
any time, `job.stop()` takes effect within one training step (or removes a job still waiting in the queue).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tl_core import distributed, events
from tl_core.auto import run_strategy
from tl_core.config import TrainConfig
from tl_core.data import DatasetManifest
from tl_core.devices import pick_device
from tl_core.errors import HeadstartError, user_message
from tl_core.runs import read_json, summary_from_log, write_json_atomic

ACTIVE_STATES = ("queued", "running")
# After Stop, the processes of a run end at their next step; one stuck rather than stepping is ended after this long.
STOP_GRACE_SECONDS = 120.0


class TrainingProcessError(HeadstartError):
    """A training over several processes ended without its summary (one of them died, or torchrun failed)."""


@dataclass
class JobSnapshot:
    id: str
    device: str
    state: str  # queued, running, finished, stopped, failed, cancelled
    config: dict
    queue_position: int = 0  # jobs ahead of this one on its device (0 when running)
    stage: str = ""  # scan, decode, features, train
    stage_done: int = 0
    stage_total: int = 0
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    images_per_second: float = 0.0
    eta_seconds: float | None = None
    lr: float | None = None
    step_losses: list[tuple[int, float]] = field(default_factory=list)
    lr_schedule: list[float] = field(default_factory=list)  # the planned learning rate of every step
    history: list[dict] = field(default_factory=list)  # one dict per finished epoch
    messages: list[str] = field(default_factory=list)
    start_info: dict = field(default_factory=dict)
    stopping: bool = False  # stop was asked for; the job ends at its next step
    data_label: str = ""  # the data set as the person who started it knows it ("folder 'leaves'")
    run_dir: str | None = None
    summary: dict | None = None
    error: str | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def fraction_done(self) -> float:
        if self.state in ("finished", "stopped"):
            return 1.0
        if self.total_steps:
            return min(1.0, self.step / self.total_steps)
        return 0.0


class Job:
    def __init__(
        self, job_id: str, config: TrainConfig, device: str, manager: JobManager, manifest=None, data_label: str = ""
    ):
        self.config = config
        self._manifest = manifest  # the data set as the page scanned it: the job does not read it again
        self._manager = manager
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.launcher: subprocess.Popen | None = None  # torchrun, while a training of several processes runs
        self._snap = JobSnapshot(
            job_id,
            device,
            "queued",
            asdict(config),
            submitted_at=time.time(),
            epochs=config.epochs,
            data_label=data_label,
        )

    @property
    def id(self) -> str:
        return self._snap.id

    @property
    def device(self) -> str:
        return self._snap.device

    @property
    def state(self) -> str:
        with self._lock:
            return self._snap.state

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            snap = copy.copy(self._snap)
            snap.step_losses = list(self._snap.step_losses)
            snap.history = list(self._snap.history)
            snap.messages = list(self._snap.messages)
        if snap.state == "queued":
            snap.queue_position = self._manager.queue_position(self)
        return snap

    def stop(self) -> None:
        """Ask the job to stop: at the next training step, or at once if it is still waiting."""
        self._stop.set()
        with self._lock:
            self._snap.stopping = self._snap.state == "running"
            if self._snap.state == "queued":
                self._snap.state = "cancelled"
                self._snap.ended_at = time.time()
                self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _on_event(self, event: events.Event) -> None:
        with self._lock:
            _APPLY.get(type(event), _ignore)(self._snap, event)

    def _run(self) -> None:
        with self._lock:
            if self._snap.state != "queued":
                return
            self._snap.state = "running"
            self._snap.started_at = time.time()
        summary, error = None, None
        try:
            if self.config.processes > 1:
                summary = self._run_in_processes()
            else:
                summary = run_strategy(self.config, self._on_event, self._stop.is_set, self._manifest)
            state = summary["status"]
        except Exception as exc:  # noqa: BLE001 - a failed job reports; the worker thread must live on
            state, error = "failed", user_message(exc)
        self._manifest = None  # a large data set's manifest is not kept for the life of the server
        with self._lock:
            self._snap.state, self._snap.stopping = state, False
            self._snap.summary = summary
            self._snap.error = error
            self._snap.ended_at = time.time()
            self._done.set()

    def _run_in_processes(self) -> dict:
        """Several processes train together: torchrun in a subprocess (this process may have touched CUDA, so it
        cannot start them itself), rank 0's events read from its stdout as they come, a stop passed on as a file."""
        from tl_core.cli import config_argv

        folder = Path(tempfile.mkdtemp(prefix="headstart-job-"))
        stop_file, ended, over = folder / "stop", {}, threading.Event()

        def pass_stop_on() -> None:
            while not over.is_set():
                if self._stop.wait(0.25):
                    with contextlib.suppress(OSError):  # the run ended meanwhile and its folder went
                        stop_file.touch()
                    if not over.wait(STOP_GRACE_SECONDS) and (launcher := self.launcher) is not None:
                        distributed.end_process(launcher)  # stuck: Stop must end it all the same
                    return

        def on_line(line: str) -> None:
            try:
                record = json.loads(line)
            except ValueError:
                return
            event = events.from_record(record) if isinstance(record, dict) else None  # else a library's print
            if event is not None:
                self._on_event(event)
                if isinstance(event, events.Ended):
                    ended["summary"] = event.summary

        threading.Thread(target=pass_stop_on, daemon=True).start()
        try:
            args = config_argv(self.config) + ["--events", "--stop-file", str(stop_file)]
            status, report = distributed.run_processes(
                args, self.config.processes, on_line, self._started_launcher, device=self.config.device
            )
        finally:
            over.set()
            self.launcher = None
            shutil.rmtree(folder, ignore_errors=True)
        run_dir = self.snapshot().run_dir
        # its summary as it went by, else as rank 0 wrote it: a run that ended well did, whatever came after
        summary = ended.get("summary") or (read_json(Path(run_dir) / "summary.json") if run_dir else None)
        if summary and (status == 0 or summary.get("status") in ("finished", "stopped")):
            return summary
        sentence = distributed.failure_sentence(report, self.config.processes)
        self._record_failure(sentence)
        raise TrainingProcessError(sentence)

    def _started_launcher(self, process: subprocess.Popen) -> None:
        self.launcher = process

    def _record_failure(self, sentence: str) -> None:
        """The run folder's failed summary says what torchrun saw: rank 0 may have been killed before it could
        write one, or have written only that another process was gone."""
        run_dir = self.snapshot().run_dir
        if run_dir and (read_json(Path(run_dir) / "summary.json", {}) or {}).get("status") in (None, "failed"):
            summary = summary_from_log(Path(run_dir), "failed", sentence, asdict(self.config))
            write_json_atomic(Path(run_dir) / "summary.json", summary)


class JobManager:
    """One per process. Each device trains one job at a time; the others wait in its queue."""

    def __init__(self):
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, queue.Queue] = {}
        self._waiting: dict[str, list[Job]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    def submit(self, config: TrainConfig, manifest: DatasetManifest | None = None, data_label: str = "") -> Job:
        """Queue a training, or return the job already queued or running with the same config (one click, one job).

        `manifest` is the data set as already scanned with the config's split settings: the job does not rescan it.
        """
        device = str(pick_device(config.device))
        with self._lock:
            if self._closed:
                raise RuntimeError("The job manager is shut down.")
            if existing := self._find_active(config):
                return existing  # a second click on the same Start: the job it already started
            job = Job(f"job-{next(self._ids)}-{int(time.time())}", config, device, self, manifest, data_label)
            self._jobs[job.id] = job
            self._waiting.setdefault(device, []).append(job)
            if device not in self._threads:
                self._queues[device] = queue.Queue()
                thread = threading.Thread(target=self._worker, args=(device,), name=f"headstart-{device}", daemon=True)
                self._threads[device] = thread
                thread.start()
            self._queues[device].put(job)
        return job

    def find_active(self, config: TrainConfig) -> Job | None:
        """The job queued or running with exactly this config, if any (and not being stopped)."""
        with self._lock:
            return self._find_active(config)

    def _find_active(self, config: TrainConfig) -> Job | None:  # with self._lock held
        same = (j for j in self._jobs.values() if j.config == config and not j.stop_requested)
        return next((j for j in same if j.state in ACTIVE_STATES), None)

    def queue_position(self, job: Job) -> int:
        """How many jobs are before `job` on its device, the running one included."""
        with self._lock:
            waiting = [j for j in self._waiting.get(job.device, []) if not j.stop_requested]
            same_device = [j for j in self._jobs.values() if j.device == job.device]
        running = any(j.state == "running" for j in same_device)
        return (waiting.index(job) if job in waiting else 0) + int(running)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """Every job of this process, newest first."""
        return list(reversed(self._jobs.values()))

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs() if j.snapshot().active]

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every job and end the workers (tests, server exit)."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop()
        for _device, q in self._queues.items():
            q.put(None)
        for thread in self._threads.values():
            thread.join(timeout)
        for job in jobs:  # a run of several processes that did not stop in time is not left running on its own
            if (launcher := job.launcher) is not None:
                distributed.end_process(launcher)

    def _worker(self, device: str) -> None:
        q = self._queues[device]
        while True:
            job = q.get()
            if job is None:
                return
            with self._lock:
                if job in self._waiting.get(device, []):
                    self._waiting[device].remove(job)
            job._run()


# How each training event changes a job's snapshot (called with the job's lock held).
def _on_created(snap: JobSnapshot, e: events.Created) -> None:
    if snap.run_dir:  # a job's second run (Auto fine-tunes after the fitted head): the live view follows it
        snap.history, snap.step_losses, snap.lr_schedule, snap.start_info = [], [], [], {}
        snap.step = snap.total_steps = snap.epoch = 0
    snap.run_dir = e.run_dir


def _on_progress(snap: JobSnapshot, e: events.Progress) -> None:
    snap.stage, snap.stage_done, snap.stage_total = e.stage, e.done, e.total


def _on_started(snap: JobSnapshot, e: events.Started) -> None:
    snap.start_info = dataclasses.asdict(e)


def _on_step(snap: JobSnapshot, e: events.Step) -> None:
    snap.stage, snap.epoch, snap.step, snap.total_steps = "train", e.epoch, e.step, e.total_steps
    snap.images_per_second, snap.eta_seconds, snap.lr = e.images_per_second, e.eta_seconds, e.lr
    snap.step_losses.append((e.step, e.loss))


def _on_schedule(snap: JobSnapshot, e: events.Schedule) -> None:
    snap.lr_schedule = e.lrs  # replaced, never changed in place: snapshots may share it


def _on_epoch(snap: JobSnapshot, e: events.EpochEnd) -> None:
    snap.history.append(dataclasses.asdict(e))
    snap.epochs = e.epochs  # as resolved: a head fitted by the probe is one epoch, whatever was asked


def _on_text(snap: JobSnapshot, e: events.Message | events.FeatureCache) -> None:
    snap.messages.append(e.text)


def _ignore(snap: JobSnapshot, e: events.Event) -> None:
    pass


_APPLY = {
    events.Created: _on_created,
    events.Progress: _on_progress,
    events.Started: _on_started,
    events.Step: _on_step,
    events.Schedule: _on_schedule,
    events.EpochEnd: _on_epoch,
    events.Message: _on_text,
    events.FeatureCache: _on_text,
}

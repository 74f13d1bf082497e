"""Training on several devices at once with PyTorch's own DDP, in processes started by torchrun.

torchrun starts one process per device (`python -m torch.distributed.run --standalone --nproc_per_node N -m tl_core
train ...`, or with `--nnodes` and a rendezvous endpoint across machines) and tells each its place through the
environment (RANK, LOCAL_RANK, WORLD_SIZE). Every process builds the same model; DDP averages the gradients, so a
step over N processes of B/N pictures each is a step over the global batch B. Rank 0 alone writes the run folder,
its events and checkpoints; the others compute and keep quiet. The job queue runs such a training as a subprocess
(`launch_command`), because the web app's process has already touched CUDA and cannot fork workers.

Several processes must take the same decisions at the same steps, or one waits forever in a collective the others
never reach. So a stop is agreed at each step (`agree`), the data set is scanned once and sent to all
(`from_main`), caches are built by one process per machine before the others read them (`main_first`), and
validation is split between the processes and gathered (`gather_rows`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from tl_core.devices import pick_device
from tl_core.errors import HeadstartError

T = TypeVar("T")
# How long a collective waits for the slowest process. Steps wait little: a process that is stuck rather than dead
# (a dead one torchrun notices at once) fails the run within half an hour. The waits for rank 0's scan and for the
# caches of tens of thousands of pictures take their own group, on the CPU, with hours to spare.
STEP_TIMEOUT = datetime.timedelta(minutes=30)
CACHE_TIMEOUT = datetime.timedelta(hours=3)
_STOPPED = "__headstart_stopped__"  # what rank 0 sends in place of a result when it was asked to stop meanwhile
LOST_PEER = "Another of the training processes ended unexpectedly"  # how every process that outlived one says so


class PeerLost(HeadstartError):
    """A collective failed because another of the processes training together is gone."""


@dataclass(frozen=True)
class World:
    """This process's place among those training together (a single process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device | None = None
    waiting_group: object | None = None  # gloo, with CACHE_TIMEOUT: for the long waits of from_main and main_first

    @property
    def main(self) -> bool:
        """The process that writes the run folder and talks to the person."""
        return self.rank == 0

    @property
    def local_main(self) -> bool:
        """The first process on its machine: it builds the caches there."""
        return self.local_rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module DDP-wrapped when several processes train (gradients averaged across them), else itself."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def agree(self, flag: bool, long_wait: bool = False) -> bool:
        """True on every process when it is true on any (a stop asked of rank 0 reaches them all at the same step)."""
        if not self.active:
            return flag
        device = torch.device("cpu") if long_wait else self._collective_device
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.waiting_group if long_wait else None)
        return bool(value.item())

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the processes (loss totals, right answers, picture counts)."""
        if not self.active:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(total)
        return total.tolist()

    def share(self, n: int) -> slice:
        """This process's share of n items to evaluate: every size-th, from its rank."""
        return slice(self.rank, n, self.size)

    def gather_rows(self, part: torch.Tensor, n: int) -> torch.Tensor:
        """The whole n-row tensor back from each process's `share(n)` of its rows, in the original order."""
        if not self.active:
            return part
        parts: list = [None] * self.size
        dist.all_gather_object(parts, part.cpu())
        whole = torch.empty((n, *part.shape[1:]), dtype=part.dtype)
        for rank, rows in enumerate(parts):
            whole[rank : n : self.size] = rows
        return whole

    def from_main(self, compute: Callable[[], T], stop: type[Exception]) -> T:
        """`compute()` on rank 0 alone, its result sent to every process; `stop` raised on all if rank 0 raised it."""
        if not self.active:
            return compute()
        box: list = [None]
        if self.main:
            try:
                box[0] = compute()
            except stop:
                box[0] = _STOPPED
        dist.broadcast_object_list(box, src=0, group=self.waiting_group, device=torch.device("cpu"))
        if isinstance(box[0], str) and box[0] == _STOPPED:
            raise stop
        return box[0]

    @contextlib.contextmanager
    def main_first(self, stop: type[Exception]) -> Iterator[None]:
        """The body runs first on each machine's first process (it builds the disk caches), then on the others
        (which find them built). Asked to stop meanwhile, every process raises `stop`."""
        if not self.active:
            yield
            return
        if not self.local_main and self.agree(False, long_wait=True):
            raise stop
        try:
            yield
        except stop:
            if self.local_main:
                self.agree(True, long_wait=True)
            raise
        if self.local_main and self.agree(False, long_wait=True):
            raise stop

    @property
    def _collective_device(self) -> torch.device:
        """NCCL reduces tensors on the GPU; gloo on the CPU."""
        return self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")


def launched() -> bool:
    """Whether this process was started by torchrun with others (a cluster's own WORLD_SIZE, set for the web app's
    process by a scheduler, is not torchrun's: TORCHELASTIC_RUN_ID is)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ


def join(device: str = "auto") -> World:
    """This process's World; under torchrun, the process group is joined first (NCCL on GPUs, gloo on CPUs)."""
    if not launched():
        return World(device=pick_device(device))
    rank, local_rank, size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    picked = pick_device(device)
    if picked.type == "cuda":
        picked = torch.device("cuda", local_rank)
        torch.cuda.set_device(picked)
    if not dist.is_initialized():
        backend = "nccl" if picked.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=STEP_TIMEOUT, device_id=picked if backend == "nccl" else None)
    return World(rank, local_rank, size, picked, _waiting_group())


_WAITING_GROUP: list = []


def _waiting_group():
    """The one gloo group for long waits, made once per process (making a group is a collective)."""
    if not _WAITING_GROUP:
        _WAITING_GROUP.append(dist.new_group(backend="gloo", timeout=CACHE_TIMEOUT))
    return _WAITING_GROUP[0]


def leave() -> None:
    """After a run that ended well only: on a failure, a process exits without it, since NCCL's shutdown can wait
    for peers that will never come (and torchrun must see the process end to stop the others)."""
    if dist.is_initialized():
        dist.destroy_process_group()
        _WAITING_GROUP.clear()


def launch_command(train_args: list[str], processes: int) -> list[str]:
    """The command that trains with `processes` processes on this machine: torchrun (as `python -m
    torch.distributed.run`, so it is this Python's) with a free port of its own (`--standalone`). Several machines
    start torchrun themselves (README)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "-m",
        "tl_core",
        "train",
        *train_args,
    ]


def launch_environment(processes: int) -> dict[str, str]:
    """The environment of the launched processes: tl_core importable from anywhere, and the CPU cores shared
    between the processes (torchrun would give each process a single thread)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    env["PYTHONUNBUFFERED"] = "1"  # events reach the job as they happen
    return env


def failure_sentence(launcher_output: str, processes: int) -> str:
    """What a person is told when torchrun ended in failure, from torchrun's own report: the process that failed
    first (its "root cause"), killed by a signal or stopped by a Headstart error (whose sentence is told as is)."""
    root = launcher_output.rsplit("Root Cause", 1)[-1]
    ranks = re.findall(r"rank\s*:\s*(\d+)", root)
    codes = [int(code) for code in re.findall(r"exitcode\s*:\s*(-?\d+)", root)]
    said = [
        line.strip()
        for line in launcher_output.splitlines()
        if line.startswith("headstart: ") and LOST_PEER not in line  # that one is the consequence, not the cause
    ]
    if said and not (codes and codes[0] < 0):  # a process said why (a bad folder, a full disk): that is the news
        return said[-1].removeprefix("headstart: ")
    who = f"Training process {int(ranks[0]) + 1} of {processes}" if ranks else "One of the training processes"
    how = ""
    if codes and codes[0] < 0:
        with contextlib.suppress(ValueError):
            how = f" (it was ended by {signal.Signals(-codes[0]).name})"
    elif codes:
        how = f" (exit status {codes[0]})"
    return (
        f"{who} ended unexpectedly{how}, so torchrun stopped the others and the run failed. Start the training "
        "again; if it happens again, train on fewer devices."
    )


def lost_peer_message(exc: BaseException, world: World) -> str | None:
    """The sentence for a collective that failed because another process is gone (gloo and NCCL say so in their
    own words), or None for any other error."""
    text = str(exc)
    if not world.active or not (
        isinstance(exc, dist.DistError) or any(w in text for w in ("gloo", "NCCL", "Connection closed", "Broken pipe"))
    ):
        return None
    return (
        f"{LOST_PEER} (of {world.size}), so this one could not go on and the run failed. Start the training again; "
        "if it happens again, train on fewer devices."
    )


def check_devices(device: str, processes: int) -> None:
    """A sentence now, rather than every process failing on a GPU that is not there."""
    if pick_device(device).type == "cuda" and processes > torch.cuda.device_count():
        raise ValueError(
            f"{processes} processes (one per GPU) were asked for, but this machine has {torch.cuda.device_count()} "
            "GPU(s). Ask for at most that many."
        )


def run_processes(
    train_args: list[str],
    processes: int,
    on_line: Callable[[str], None],
    on_start: Callable[[subprocess.Popen], None] = lambda process: None,
    echo_errors: bool = False,
    device: str = "auto",
) -> tuple[int, str]:
    """Train under torchrun with `processes` processes: each line rank 0 prints goes to `on_line` as it comes.
    Returns torchrun's exit status and the end of what the processes and torchrun wrote on stderr (its report of
    a failure); with `echo_errors` that is also passed on, byte for byte (progress bars redraw in place), to this
    process's stderr as it comes. If this side fails (or is interrupted), torchrun and its processes are ended."""
    check_devices(device, processes)
    process = subprocess.Popen(
        launch_command(train_args, processes),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=launch_environment(processes),
    )
    on_start(process)
    tail = bytearray()

    def read_errors() -> None:
        while chunk := process.stderr.read1(65536):
            tail.extend(chunk)
            del tail[:-65536]
            if echo_errors:
                sys.stderr.buffer.write(chunk)
                sys.stderr.buffer.flush()

    reader = threading.Thread(target=read_errors, daemon=True)
    reader.start()
    try:
        for line in process.stdout:
            on_line(line.decode("utf-8", errors="replace"))
        status = process.wait()
    finally:
        end_process(process)
    reader.join(timeout=10)
    return status, tail.decode("utf-8", errors="replace")


def end_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """torchrun asked to end (it passes SIGTERM on to its processes), then killed if it does not."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

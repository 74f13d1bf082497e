"""Which device trains: CUDA if present, else Apple's MPS, else the CPU; and how to describe it to a person."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for, but no NVIDIA GPU is usable here. Use --device auto or cpu.")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("MPS was asked for, but this machine has no usable Apple GPU. Use --device auto or cpu.")
    if requested not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Unknown device '{requested}': use auto, cpu, cuda or mps.")
    return torch.device(requested)


def describe_device(device: torch.device | str | None = None) -> str:
    """'NVIDIA H100 80GB HBM3 (79.1 GiB)' or 'CPU (2 cores)': what a person needs to know about speed."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 1024**3:.1f} GiB)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({os.cpu_count() or 1} cores)"


def autocast(device: torch.device):
    """bf16 on CUDA (the fast path), full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def on_device_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """channels_last on CUDA, where convolutions run faster in it."""
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


@dataclass(frozen=True)
class DeviceChoice:
    """One way to train, as the Train page offers it: a device, and how many of them train together."""

    label: str
    device: str  # TrainConfig.device
    processes: int = 1  # TrainConfig.processes: more than 1 is DDP under torchrun, one process per GPU


def device_choices(gpus: list[str] | None = None, apple_gpu: bool | None = None) -> list[DeviceChoice]:
    """Every GPU count from 1 to all of them (when there are several), Apple's GPU, then the CPU (and, with no GPU,
    the CPU shared by two processes: 25% faster steps on 2 cores, docs/BENCHMARKS.md); `gpus` (their names) and
    `apple_gpu` default to what this machine has."""
    if gpus is None:
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if apple_gpu is None:
        apple_gpu = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    choices = []
    for n in range(1, len(gpus) + 1):
        names = sorted(set(gpus[:n]))
        kind = names[0] if len(names) == 1 else ", ".join(names)
        together = f"All {n} GPUs" if n == len(gpus) else f"{n} GPUs"
        choices.append(DeviceChoice(f"GPU: {kind}" if n == 1 else f"{together} together ({kind})", "cuda", n))
    if apple_gpu and not gpus:
        choices.append(DeviceChoice("Apple GPU (MPS)", "mps"))
    cores = os.cpu_count() or 1
    choices.append(DeviceChoice(f"CPU ({cores} cores)", "cpu"))
    if not choices[:-1] and cores >= 2:  # no GPU: two processes of half the threads each step faster on a CPU
        choices.append(DeviceChoice(f"CPU ({cores} cores), in 2 processes", "cpu", 2))
    return choices

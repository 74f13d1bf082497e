"""Which device trains: CUDA if present, else Apple's MPS, else the CPU; and how to describe it to a person."""

from __future__ import annotations

import contextlib
import os

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

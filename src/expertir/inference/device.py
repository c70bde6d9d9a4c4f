"""Which device to run on, and the autocast every forward pass there uses."""

from __future__ import annotations

import contextlib

import torch

from expertir.errors import ExpertirError


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given (``cpu``, ``cuda``, ``cuda:1``, ``mps``), else the best available."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ExpertirError(f"unknown device {name!r} (use cpu, cuda, cuda:N or mps)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ExpertirError(f"device {name!r} asked for, but CUDA is not available here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ExpertirError(f"device {name!r} asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_for(device: torch.device):
    """bf16 (or fp16) autocast on CUDA; float32 elsewhere."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()

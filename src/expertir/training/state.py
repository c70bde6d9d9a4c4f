"""Training-state checkpoints for exact resume.

``last.pt`` holds everything the next step depends on: model, EMA, optimizer, LR
scheduler, gradient scaler, the number of finished steps (the data position: see
:mod:`expertir.training.data`) and the RNG states of every process (torch, CUDA, NumPy,
Python). It is written to a temporary file in the same folder and renamed over the old one
(an atomic replace), so a run killed at any moment leaves either the previous or the new
checkpoint, never a partial one. Everything is stored as tensors and plain Python values,
so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from expertir.atomic import atomic_path
from expertir.errors import CheckpointError


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file, then an atomic rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no training checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable training checkpoint ({str(exc).splitlines()[0]})") from None

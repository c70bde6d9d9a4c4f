"""Pretrained weights shipped inside the package (``<model>.safetensors`` + a model card).

:func:`load_pretrained` is the one way to get a ready model: shipped weights by model name,
a checkpoint file, or (for pipeline tests) random weights. Every command uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from expertir.errors import ExpertirError

WEIGHTS_DIR = Path(__file__).resolve().parent

#: What ``expertir restore`` uses when neither --model nor --weights is given: the shipped
#: model with the best mean over the test columns among those that pass every no-harm check
#: (expertir.evaluation.verdict; ``make results`` re-measures the choice and says so when it
#: differs from this line).
DEFAULT_MODEL = "sler_ir"


def shipped_weights(name: str) -> Path | None:
    """The shipped checkpoint for a model family or preset name, if there is one."""
    exact = WEIGHTS_DIR / f"{name}.safetensors"
    if exact.is_file():
        return exact
    matches = sorted(WEIGHTS_DIR.glob(f"{name}_*.safetensors"))
    return matches[0] if matches else None


def list_shipped() -> list[Path]:
    return sorted(WEIGHTS_DIR.glob("*.safetensors"))


@dataclass
class Pretrained:
    """A model ready for inference and where its weights came from."""

    model: nn.Module
    name: str  # registered model name (e.g. ``sler_ir_tiny``)
    source: str  # human-readable origin of the weights
    path: Path | None  # the checkpoint file (None for random weights)
    metadata: dict


def load_pretrained(model: str | None = None, weights: str | Path | None = None,
                    untrained: bool = False, device: str | torch.device = "cpu") -> Pretrained:
    """A model in eval mode on ``device``.

    ``weights``: an expertir ``.safetensors`` checkpoint (its metadata names the model).
    Otherwise ``model`` (a registered name; default :data:`DEFAULT_MODEL`) with its shipped
    weights, or with random weights when ``untrained`` (pipeline testing only).
    """
    from expertir.checkpoint import load_model
    from expertir.models import build_model, list_models

    if weights:
        net, meta = load_model(weights, device=device)
        return Pretrained(net.eval(), meta["model"], f"{meta['model']} from {weights}", Path(weights), meta)
    name = model or DEFAULT_MODEL
    if name not in list_models():
        raise ExpertirError(f"unknown model {name!r}; see 'expertir models'")
    if untrained:
        net = build_model(name).to(device).eval()
        return Pretrained(net, name, f"{name} with RANDOM weights (untrained)", None, {})
    path = shipped_weights(name)
    if path is None:
        shipped = ", ".join(p.stem for p in list_shipped()) or "none"
        raise ExpertirError(f"no shipped weights for model {name!r} (shipped: {shipped}); "
                            f"pass --weights FILE, or --untrained to test the pipeline")
    net, meta = load_model(path, device=device)
    return Pretrained(net.eval(), meta["model"], f"{meta['model']} (shipped weights {path.name})", path, meta)

"""Pretrained weights shipped inside the package (``<model>.safetensors`` + a model card)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent

#: What ``expertir restore`` uses when neither --model nor --weights is given.
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

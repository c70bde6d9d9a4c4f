"""Model checkpoints: safetensors weights with JSON metadata in the file's header.

A checkpoint is one ``.safetensors`` file. Its header metadata holds ``expertir`` → a JSON
object with at least ``model`` (registered name) and ``config`` (constructor arguments), and
whatever the trainer adds (training recipe, data, steps, seed, metrics). Loading never runs
code: safetensors holds tensors only, and foreign ``.pth``/``.ckpt`` files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from expertir.atomic import atomic_path
from expertir.errors import CheckpointError
from expertir.models import build_model

METADATA_KEY = "expertir"


def save_checkpoint(path: str | Path, model: nn.Module, name: str,
                    metadata: dict | None = None) -> Path:
    """Write ``model``'s weights and metadata atomically (temp file + rename)."""
    path = Path(path)
    meta = {"model": name, "config": getattr(model, "config", {}), **(metadata or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={METADATA_KEY: json.dumps(meta, default=str)})
    return path


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of an expertir checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without expertir metadata; "
                              f"load it with --model NAME --weights FILE")
    return json.loads(raw)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors are many; all mean "not a plain weights file"
        raise CheckpointError(f"{path}: cannot be read as plain weights "
                              f"(torch.load weights_only=True: {str(exc).splitlines()[0]})") from None
    for key in ("params_ema", "params", "state_dict", "model", "ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found")
    # Lightning and DDP prefixes
    for prefix in ("net.", "module.", "model."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load weights into ``model``; say clearly which keys or shapes do not match."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    state = _read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        name = getattr(model, "config", None)
        raise CheckpointError(f"{path}: weights do not fit the model "
                              f"({type(model).__name__} {name}): " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu",
               name: str | None = None, **config) -> tuple[nn.Module, dict]:
    """Build the model a checkpoint describes and load its weights (eval mode).

    For foreign files without expertir metadata, pass the registered ``name`` (and config).
    """
    path = Path(path)
    if name is None:
        meta = read_metadata(path)
        name, config = meta["model"], {**meta.get("config", {}), **config}
    else:
        meta = {"model": name, "config": config}
        if path.suffix == ".safetensors":
            try:
                meta = {**read_metadata(path), **meta}
            except CheckpointError:
                pass
    try:
        model = build_model(name, **config)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot build model {name!r}: {exc}") from None
    load_weights(model, path)
    return model.to(device).eval(), meta

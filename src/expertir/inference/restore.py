"""``restore(model, image)``: pad to the network's multiple, run whole or tiled, crop back."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn

from expertir.errors import ExpertirError
from expertir.inference.tiling import tile_starts, tile_window
from expertir.models.blocks import pad_to_multiple


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


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _multiple(model: nn.Module) -> int:
    return int(getattr(model, "size_multiple", 8))


@torch.inference_mode()
def _run_tiled(model: nn.Module, x: torch.Tensor, tile: int, overlap: int,
               batch: int, device: torch.device, progress=None) -> torch.Tensor:
    """Run ``model`` over overlapping tiles of the CPU tensor ``x`` (1×C×H×W), blended."""
    _, c, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, xx) for y in tile_starts(h, th, overlap) for xx in tile_starts(w, tw, overlap)]
    out = torch.zeros(c, h, w)
    weight = torch.zeros(1, h, w)
    if progress is not None:
        progress.reset(total=len(boxes))
    for i in range(0, len(boxes), batch):
        chunk = boxes[i:i + batch]
        tiles = torch.cat([x[..., y:y + th, xx:xx + tw] for y, xx in chunk]).to(device)
        with _autocast(device):
            pred = model(tiles)
        pred = pred.float().cpu()
        for (y, xx), p in zip(chunk, pred):
            win = tile_window(th, tw, overlap, top=y > 0, bottom=y + th < h,
                              left=xx > 0, right=xx + tw < w)
            out[:, y:y + th, xx:xx + tw] += p * win
            weight[:, y:y + th, xx:xx + tw] += win
        if progress is not None:
            progress.update(len(chunk))
    return out.div_(weight).unsqueeze(0)


@torch.inference_mode()
def restore(model: nn.Module, image, tile: int | None = None, overlap: int = 32,
            device: str | torch.device | None = None, tile_batch: int = 4,
            progress=None):
    """Restore ``image`` (H×W×3 float numpy in [0,1], or an N×C×H×W tensor).

    Whole-image mode pads to the model's size multiple and crops back. With ``tile``,
    the padded image is cut into overlapping ``tile``-sized tiles (rounded up to the
    multiple), run ``tile_batch`` at a time and blended (see :mod:`expertir.inference.tiling`),
    so peak memory follows the tile size, not the image size. ``progress`` (a tqdm bar)
    is reset to the number of tiles and advanced as they finish. Returns the type it got.
    """
    device = select_device(device) if not isinstance(device, torch.device) else device
    as_numpy = isinstance(image, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None] if as_numpy else image
    x = x.float()
    model = model.to(device).eval()
    h, w = x.shape[-2:]
    m = _multiple(model)
    if tile is not None:
        if tile <= 0 or overlap < 0:
            raise ExpertirError(f"tile must be positive and overlap non-negative (got {tile}, {overlap})")
        tile = -(-tile // m) * m
        if overlap >= tile:
            raise ExpertirError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    xp = pad_to_multiple(x, m)
    if tile is None or (xp.shape[-2] <= tile and xp.shape[-1] <= tile):
        with _autocast(device):
            out = model(xp.to(device)).float().cpu()
    else:
        out = torch.cat([_run_tiled(model, xp[i:i + 1].cpu(), tile, overlap, tile_batch, device,
                                    progress) for i in range(xp.shape[0])])
    out = out[..., :h, :w].clamp_(0, 1)
    if as_numpy:
        return out[0].permute(1, 2, 0).numpy()
    return out

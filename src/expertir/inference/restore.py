"""``restore(model, image)``: whole or tiled as the memory budget allows, padded to the
network's multiple and cropped back.

The plan (whole image, or which tile and batch) comes from :mod:`expertir.inference.plan`.
Tiled runs go one **row of tiles** at a time: their window-weighted predictions are summed
into a band one tile high; once a row is done, the band rows above the next row's first
tile are final, so they are divided by their weight, written to the output and dropped.
Apart from the output, only that band (plus the batch in flight) is held, whatever the
image size. Tiles are cut from the image padded to the model's multiple (the same padding
as the whole-image run), padding only the tiles that cross the border, so the padded copy
of a whole large image is never made.

If a whole-image run runs out of memory (CUDA OOM, or a failed CPU allocation), it is
retried once in tiles planned from the default budget, and the plan callback hears so.

``self_ensemble=n`` (2, 4 or 8) restores the image in ``n`` of its eight flips and
transposes and averages the results mapped back (the geometric self-ensemble of EDSR and
SwinIR's "+" results): n forward passes for a small gain (docs/results.md). Each view is
planned and run as above (a transposed view gets its own plan).

The whole restored image then passes the exposure guard (:mod:`expertir.inference.exposure`),
which takes back brightening that the input's white point rules out. A gray input (three
equal channels) stays gray: the output's channels are averaged, which is what a gray photo
is written as, so the evaluation scores what ``expertir restore`` writes.
"""

from __future__ import annotations

import gc

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from expertir.errors import ExpertirError
from expertir.inference.device import autocast_for, select_device
from expertir.inference.exposure import keep_exposure
from expertir.inference.plan import TilePlan, plan_restore, size_multiple, tile_grid
from expertir.inference.tiling import tile_window
from expertir.models.blocks import pad_to_multiple

def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA OOM, CPU allocator, MemoryError)."""
    if isinstance(exc, MemoryError) or isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "failed to allocate"))


def _pad_mode(h: int, w: int, m: int) -> str:
    """The padding :func:`~expertir.models.blocks.pad_to_multiple` uses for an h×w image."""
    return "reflect" if (-h) % m < h and (-w) % m < w else "replicate"


def _cut(x: torch.Tensor, y: int, xx: int, th: int, tw: int, mode: str) -> torch.Tensor:
    """The ``th``×``tw`` window at (y, xx) of ``x`` padded bottom/right as the whole image is."""
    h, w = x.shape[-2:]
    part = x[..., y:min(y + th, h), xx:min(xx + tw, w)]
    pad_h, pad_w = th - part.shape[-2], tw - part.shape[-1]
    return F.pad(part, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else part


@torch.inference_mode()
def _run_whole(model: nn.Module, x: torch.Tensor, out: torch.Tensor, device: torch.device) -> None:
    """One forward pass over ``x`` (1×C×H×W) padded to the model's multiple, into ``out`` (C×H×W)."""
    h, w = x.shape[-2:]
    xp = pad_to_multiple(x, size_multiple(model)).contiguous().to(device)
    with autocast_for(device):
        pred = model(xp)
    del xp
    out.copy_(pred[0, :, :h, :w].float().clamp_(0, 1))


@torch.inference_mode()
def _run_tiled(model: nn.Module, x: torch.Tensor, out: torch.Tensor, plan: TilePlan,
               device: torch.device, progress=None) -> None:
    """Run ``model`` over the tiles of the CPU image ``x`` (1×C×H×W) into ``out`` (C×H×W)."""
    _, c, h, w = x.shape
    m = size_multiple(model)
    hp, wp = -(-h // m) * m, -(-w // m) * m
    mode, ov = _pad_mode(h, w, m), plan.overlap
    th, tw = min(plan.tile[0], hp), min(plan.tile[1], wp)
    rows, cols = tile_grid(hp, wp, (th, tw), ov)
    band = torch.zeros(c, th, wp)  # rows [top, top + th) of the weighted sum
    weight = torch.zeros(1, th, wp)
    windows: dict[tuple[bool, ...], torch.Tensor] = {}
    if progress is not None:
        progress.reset(total=len(rows) * len(cols))
    top = 0
    for i, y in enumerate(rows):
        for j in range(0, len(cols), plan.batch):
            chunk = cols[j:j + plan.batch]
            tiles = torch.cat([_cut(x, y, xx, th, tw, mode) for xx in chunk]).to(device)
            with autocast_for(device):
                pred = model(tiles)
            del tiles
            pred = pred.float().cpu()
            for xx, p in zip(chunk, pred):
                edges = (y > 0, y + th < hp, xx > 0, xx + tw < wp)
                if edges not in windows:
                    windows[edges] = tile_window(th, tw, ov, *edges)
                win = windows[edges]
                band[:, y - top:y - top + th, xx:xx + tw] += p * win
                weight[:, y - top:y - top + th, xx:xx + tw] += win
            del pred
            if progress is not None:
                progress.update(len(chunk))
        # Rows above the next tile row are final: normalise, write out, shift the band up.
        done = (rows[i + 1] if i + 1 < len(rows) else hp) - top
        keep = min(done, h - top)
        if keep > 0:
            out[:, top:top + keep] = (band[:, :keep] / weight[:, :keep])[..., :w].clamp_(0, 1)
        rest = th - done
        band[:, :rest] = band[:, done:].clone()
        weight[:, :rest] = weight[:, done:].clone()
        band[:, rest:] = 0
        weight[:, rest:] = 0
        top += done


#: Views of the self-ensemble, in order: bit 0 flips left-right, bit 1 up-down, bit 2 transposes.
SELF_ENSEMBLE = (1, 2, 4, 8)


def _view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` (0-7) of the image ``x`` (…×H×W): transposed, then flipped, as its bits say."""
    if k & 4:
        x = x.transpose(-1, -2)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x


def _unview(y: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`_view`: an output of view ``k`` back in the image's orientation."""
    if k & 2:
        y = y.flip(-2)
    if k & 1:
        y = y.flip(-1)
    if k & 4:
        y = y.transpose(-1, -2)
    return y


def _run(model, x, out, plan, device, progress):
    if plan.whole:
        _run_whole(model, x, out, device)
    else:
        _run_tiled(model, x, out, plan, device, progress)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@torch.inference_mode()
def restore(model: nn.Module, image, tile: int | str | None = "auto", overlap: int = 32,
            device: str | torch.device | None = None, tile_batch: int | None = None,
            max_memory: int | None = None, progress=None, on_plan=None, on_measure=None,
            exposure_guard: bool = True, on_exposure=None, self_ensemble: int = 1):
    """Restore ``image`` (H×W×3 float numpy in [0,1], or an N×C×H×W tensor).

    ``tile``: ``"auto"`` (default) runs the whole image when it fits the memory budget
    (``max_memory`` bytes, else a safe share of the available memory), else the largest
    tiles that fit, batched as far as the budget allows; ``None`` or ``0`` forces the whole
    image (tiled only if the machine cannot hold it); a number runs tiles of that side,
    ``tile_batch`` (default 4) at a time. See :mod:`expertir.inference.plan`.

    ``on_plan(plan)`` hears each :class:`~expertir.inference.plan.TilePlan` before it runs
    (twice if a whole-image run ran out of memory and was retried tiled); ``on_measure(msg)``
    hears when the model's memory is about to be measured (once per model, then cached).
    ``progress`` (a tqdm bar) is reset to the number of tiles and advanced as they finish.
    ``exposure_guard`` (default on) removes the brightening of images whose white point is
    intact (:mod:`expertir.inference.exposure`); off gives the network's output as it is.
    ``on_exposure(darkened)`` hears, per image, how much the guard took back (mean over the
    pixels, 0–1 scale; 0.0 when it did not act).
    ``self_ensemble``: 1 (default), or 2, 4 or 8 flipped/transposed views averaged (module
    docstring); the progress bar then runs once per view.
    A gray ``image`` (three equal channels) gets a gray result (channels averaged).
    Returns the type it got. Raises :class:`~expertir.errors.ExpertirError` when memory
    runs out even in tiles.
    """
    if self_ensemble not in SELF_ENSEMBLE:
        raise ExpertirError(f"self_ensemble must be one of {SELF_ENSEMBLE}, not {self_ensemble!r}")
    device = select_device(device) if not isinstance(device, torch.device) else device
    as_numpy = isinstance(image, np.ndarray)
    if as_numpy:
        result = np.empty(image.shape, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        out = torch.from_numpy(result).permute(2, 0, 1)[None]
    else:
        x = image.float().cpu()
        out = result = torch.empty(x.shape)
    model = model.to(device).eval()
    h, w = x.shape[-2:]
    plan = plan_restore(model, h, w, device, tile, overlap, max_memory, tile_batch,
                        on_measure=on_measure)
    plans = {False: plan}  # by transposed or not: a transposed view is w×h
    for i in range(x.shape[0]):
        if on_plan is not None and i == 0:
            on_plan(plan)
        if self_ensemble == 1:
            plans[False] = _run_or_retry_tiled(model, x[i:i + 1], out[i], plans[False], device,
                                               progress, on_plan, (h, w, overlap, max_memory, tile_batch))
        else:
            total = torch.zeros(out[i].shape)
            for k in range(self_ensemble):
                t = bool(k & 4)
                vh, vw = (w, h) if t else (h, w)
                if t not in plans:
                    plans[t] = plan_restore(model, vh, vw, device, tile, overlap, max_memory,
                                            tile_batch, on_measure=on_measure)
                view = _view(x[i:i + 1], k).contiguous()
                restored = torch.empty(view.shape[1:])
                plans[t] = _run_or_retry_tiled(model, view, restored, plans[t], device, progress,
                                               on_plan, (vh, vw, overlap, max_memory, tile_batch))
                total += _unview(restored, k)
            out[i].copy_(total.div_(self_ensemble))
        if exposure_guard:
            restored = out[i].permute(1, 2, 0).numpy()
            before = float(restored.mean()) if on_exposure is not None else 0.0
            keep_exposure(x[i].permute(1, 2, 0).numpy(), restored, inplace=True)
            if on_exposure is not None:
                on_exposure(before - float(restored.mean()))
        if x.shape[1] == 3 and torch.equal(x[i, 0], x[i, 1]) and torch.equal(x[i, 1], x[i, 2]):
            out[i].copy_(out[i].mean(dim=0, keepdim=True).expand_as(out[i]))
    return result


def _run_or_retry_tiled(model, x, out, plan, device, progress, on_plan, planning) -> TilePlan:
    """:func:`_run` with ``plan``; if a whole-image run runs out of memory, once more in tiles.
    Returns the plan that ran (kept for the next image)."""
    try:
        _run(model, x, out, plan, device, progress)
        return plan
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        error = str(exc).splitlines()[0][:120]
    _free(device)
    if not plan.whole:
        raise ExpertirError(f"out of memory with {plan} ({error}); "
                            "try a smaller --max-memory or --tile")
    h, w, overlap, max_memory, tile_batch = planning
    plan = plan_restore(model, h, w, device, "auto", overlap, max_memory, tile_batch,
                        allow_whole=False)
    plan.reason = f"whole image ran out of memory, retried tiled; {plan.reason}"
    if on_plan is not None:
        on_plan(plan)
    try:
        _run(model, x, out, plan, device, progress)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        _free(device)
        raise ExpertirError(f"out of memory even with {plan} "
                            f"({str(exc).splitlines()[0][:120]})") from None
    return plan

"""Whole image or tiles, which tile and how many at once: decided per image from a budget.

The **budget** is the memory :func:`~expertir.inference.restore` may allocate beyond the
input image: ``max_memory`` if given (never more than the machine has available), else
:func:`default_budget`. What a plan needs is predicted from the model's measured
:class:`~expertir.inference.memory.MemoryProfile` (times ``SAFETY``) plus the buffers
restore itself holds (float32, 12 bytes per RGB pixel):

* **whole image**: the padded input copy + one forward pass over it;
* **tiled** (on CPU): the output image, the blend band (one row of tiles, see
  :mod:`expertir.inference.restore`), and per batch of tiles their inputs, their window-
  weighted copies and the forward pass. On CUDA the output and band stay in host RAM, so
  only the per-batch part counts against the device budget.

Rule: the whole image if it fits. Else the **grid** (rows × columns of tiles) that computes
the fewest pixels among those whose one tile fits: for ``n`` tiles along a side of ``L``
pixels the tile is ``(L + (n - 1) × overlap) / n`` rounded up to the model's multiple, so
tiles may be rectangular (a 1200×800 photo: 1 × 3 tiles of 800×424, 6% more pixels than
the image, where 664-px squares would compute 84% more). Tiles have at most
``MAX_TILE``² pixels; beyond that a bigger tile saves little (with the default 32-px
overlap a 1024-px tile computes 7% more than its share, a 512-px one 14%) and the budget
goes into batches instead: as many tiles of a row per forward pass as still fit.

Where the peak cannot be measured (see :mod:`expertir.inference.memory`), ``auto`` uses
``FALLBACK_TILE``-px tiles, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from expertir.errors import ExpertirError
from expertir.inference.memory import available_memory, format_size, memory_profile
from expertir.inference.tiling import tile_starts

#: Default share of the available memory (CPU: available RAM; CUDA: free device memory).
DEFAULT_SHARE = {"cpu": 0.5, "mps": 0.5, "cuda": 0.8}
#: On CPU the default budget is also at most this (unless the image's own buffers need
#: more): time per pixel does not fall with bigger batches or tiles beyond the overlap
#: saving (see ``MAX_TILE``), so more memory would not make restoring faster.
CPU_DEFAULT_CAP = 1_500_000_000
#: Factor on the predicted forward peak (RSS peaks at the measuring sizes vary by up to
#: ~15% from run to run).
SAFETY = 1.2
MAX_TILE = 1024
FALLBACK_TILE = 256
#: Tiles per batch with an explicit tile size (``--tile N``).
FIXED_TILE_BATCH = 4
BYTES_PER_PIXEL = 12  # float32 RGB


@dataclass
class TilePlan:
    """How one image is run. ``tile`` is (height, width) of the tiles, None for the whole
    image in one forward pass."""

    tile: tuple[int, int] | None
    overlap: int
    batch: int = 1
    tiles: int = 1
    budget: int | None = None  # bytes, None without a budget (explicit tile, no measurement)
    need: int | None = None  # predicted peak bytes of this plan
    reason: str = ""  # why this plan, for the one line per image

    @property
    def whole(self) -> bool:
        return self.tile is None

    def __str__(self) -> str:
        if self.whole:
            head = "whole image"
        else:
            th, tw = self.tile
            head = f"tiled {self.tiles} × {th if th == tw else f'{th}×{tw}'} px"
            if self.batch > 1:
                head += f", {self.batch} per batch"
        details = []
        if self.need is not None:
            details.append(f"needs ~{format_size(self.need)}"
                           + (f" of {format_size(self.budget)}" if self.budget else ""))
        details += [self.reason] if self.reason else []
        return head + (f" ({'; '.join(details)})" if details else "")


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def size_multiple(model: nn.Module) -> int:
    return int(getattr(model, "size_multiple", 8))


def tile_grid(height: int, width: int, tile: tuple[int, int], overlap: int) -> tuple[list[int], list[int]]:
    """Row and column starts of ``tile`` (h, w) tiles over a (padded) ``height`` × ``width`` image."""
    return (tile_starts(height, min(tile[0], height), overlap),
            tile_starts(width, min(tile[1], width), overlap))


def _side(length: int, count: int, overlap: int, multiple: int) -> int:
    """Tile side that covers ``length`` with ``count`` tiles overlapping by ``overlap``."""
    if count == 1:
        return length
    return min(length, round_up(-(-(length + (count - 1) * overlap) // count), multiple))


def default_budget(device: torch.device, minimum: float = 0) -> tuple[int | None, str]:
    """(bytes, how they were chosen): ``DEFAULT_SHARE`` of the available memory, on CPU at
    most ``CPU_DEFAULT_CAP`` unless ``minimum`` (what the image needs at least) is more."""
    available = available_memory(device)
    if available is None:
        return None, "available memory unknown"
    share = DEFAULT_SHARE.get(device.type, 0.5)
    budget, how = share * available, f"default budget: {share:.0%} of the {format_size(available)} available"
    if device.type != "cuda" and budget > max(CPU_DEFAULT_CAP, minimum):
        budget = max(CPU_DEFAULT_CAP, minimum)
        how += f", at most {format_size(budget)}"
    return int(budget), how


class _Needs:
    """Predicted peak bytes of the whole-image and tiled plans for one image."""

    def __init__(self, profile, device: torch.device, hp: int, wp: int, overlap: int):
        self.profile, self.hp, self.wp, self.overlap = profile, hp, wp, overlap
        self.host_counts = device.type != "cuda"

    def forward(self, pixels: float) -> float:
        return SAFETY * self.profile.need(pixels)

    def whole(self) -> float:
        pixels = self.hp * self.wp
        return BYTES_PER_PIXEL * pixels + self.forward(pixels)

    def tiled(self, tile: tuple[int, int], batch: int) -> float:
        th, tw = min(tile[0], self.hp), min(tile[1], self.wp)
        per_batch = 2 * BYTES_PER_PIXEL * batch * th * tw + self.forward(batch * th * tw)
        if not self.host_counts:
            return per_batch
        output = BYTES_PER_PIXEL * self.hp * self.wp
        band = (BYTES_PER_PIXEL + 4) * (th + self.overlap) * self.wp
        return output + band + per_batch


def plan_restore(model: nn.Module, height: int, width: int, device: torch.device,
                 tile: int | str | None = "auto", overlap: int = 32, max_memory: int | None = None,
                 tile_batch: int | None = None, allow_whole: bool = True,
                 on_measure=None) -> TilePlan:
    """The :class:`TilePlan` for a ``height`` × ``width`` image (see the module doc).

    ``tile``: ``"auto"`` (decide from the budget), ``None`` or 0 (whole image: still tiled
    if its predicted need exceeds the memory available at all), or a tile side in pixels
    (run as asked, ``tile_batch`` or ``FIXED_TILE_BATCH`` tiles at a time).
    ``allow_whole=False`` asks for tiles (the retry after running out of memory).
    """
    if overlap < 0:
        raise ExpertirError(f"overlap must be non-negative (got {overlap})")
    if tile_batch is not None and tile_batch < 1:
        raise ExpertirError(f"tile batch must be at least 1 (got {tile_batch})")
    m = size_multiple(model)
    hp, wp = round_up(height, m), round_up(width, m)
    if isinstance(tile, str) and tile != "auto":
        raise ExpertirError(f"tile must be 'auto', 0 or a number of pixels (got {tile!r})")
    if isinstance(tile, int) and tile < 0:
        raise ExpertirError(f"tile must be positive, 0 (whole image) or auto (got {tile})")
    if isinstance(tile, int) and tile > 0:
        side = round_up(tile, m)
        if overlap >= side:
            raise ExpertirError(f"overlap ({overlap}) must be smaller than the tile ({side})")
        rows, cols = tile_grid(hp, wp, (side, side), overlap)
        if len(rows) * len(cols) == 1 and allow_whole:
            return TilePlan(None, overlap, reason=f"fits in one {side}-px tile")
        return TilePlan((min(side, hp), min(side, wp)), overlap, tile_batch or FIXED_TILE_BATCH,
                        len(rows) * len(cols), reason=f"tile {side} asked for")
    forced_whole = not tile  # None or 0

    profile = memory_profile(model, device, on_measure=on_measure)
    if profile is None:  # no peak counter here: whole if asked or small, else fixed tiles
        square = (min(FALLBACK_TILE, hp), min(FALLBACK_TILE, wp))
        rows, cols = tile_grid(hp, wp, square, overlap)
        if allow_whole and (forced_whole or len(rows) * len(cols) == 1):
            return TilePlan(None, overlap, reason="" if forced_whole else "fits in one tile")
        return TilePlan(square, overlap, tile_batch or 1, len(rows) * len(cols),
                        reason=f"memory cannot be measured on {device.type} here: fixed tiles")

    needs = _Needs(profile, device, hp, wp, overlap)
    smallest = round_up(max(2 * overlap + m, 64), m)
    available = available_memory(device)
    if forced_whole and allow_whole:
        if available is None or needs.whole() <= available:
            return TilePlan(None, overlap, need=int(needs.whole()), reason="as asked")
        reason = (f"whole image would need ~{format_size(needs.whole())}, "
                  f"only {format_size(available)} available")
    else:
        reason = ""

    if max_memory is not None:
        budget, how = int(max_memory), "--max-memory"
        if available is not None and budget > available:
            budget, how = available, f"--max-memory capped to the {format_size(available)} available"
    else:
        budget, how = default_budget(device, minimum=needs.tiled((smallest, smallest), 1))
        if budget is None:
            budget, how = int(needs.whole()), how
    if allow_whole and not reason and needs.whole() <= budget:
        return TilePlan(None, overlap, budget=budget, need=int(needs.whole()), reason=how)

    first = tile_batch or 1
    best = None  # (computed pixels, tiles, (th, tw))
    for n_rows in range(1, -(-hp // max(1, smallest - overlap)) + 1):
        th = _side(hp, n_rows, overlap, m)
        if n_rows > 1 and th < smallest:
            break
        for n_cols in range(1, -(-wp // max(1, smallest - overlap)) + 1):
            tw = _side(wp, n_cols, overlap, m)
            if n_cols > 1 and tw < smallest:
                break
            if n_rows * n_cols == 1 or th * tw > MAX_TILE * MAX_TILE:
                continue
            if needs.tiled((th, tw), first) <= budget:  # more columns would only add overlap
                rows, cols = tile_grid(hp, wp, (th, tw), overlap)
                key = (len(rows) * len(cols) * th * tw, len(rows) * len(cols), (th, tw))
                best = min(best, key) if best else key
                break
    if best is None:
        least = needs.tiled((min(smallest, hp), min(smallest, wp)), first)  # the smallest tiles
        raise ExpertirError(f"a {width}×{height} image needs at least ~{format_size(least)} to restore "
                            f"in tiles; the budget is {format_size(budget)} ({how})")
    tile = best[2]
    rows, cols = tile_grid(hp, wp, tile, overlap)
    batch = tile_batch or max(b for b in range(1, len(cols) + 1) if b == 1 or needs.tiled(tile, b) <= budget)
    return TilePlan(tile, overlap, batch, len(rows) * len(cols), budget, int(needs.tiled(tile, batch)),
                    "; ".join(r for r in (reason, how) if r))

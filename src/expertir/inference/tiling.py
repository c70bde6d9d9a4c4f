"""Tile grid and blending window for tiled inference.

Tiles of side ``tile`` step by ``tile - overlap``; the last tile is shifted back to end at
the border, so every tile has the full size. Each tile's output is weighted by a separable
window that, along an edge shared with a neighbour, is 0 over the outer quarter of the
overlap, rises as a raised cosine over its middle half and is 1 beyond; along the image
border it is 1. Two neighbours' ramps are complementary (sin² + cos² = 1), so there are no
seams, and a model whose receptive radius is at most ``overlap // 4`` gives exactly the
untiled result: every pixel is taken only from tiles where it lies at least that far from
an inner tile edge.
"""

from __future__ import annotations

import math

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` overlapping by ``overlap``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(length: int, overlap: int, rising_edge: bool, falling_edge: bool) -> torch.Tensor:
    w = torch.ones(length, dtype=torch.float64)
    margin, ramp = overlap // 4, overlap - 2 * (overlap // 4)
    i = torch.arange(ramp, dtype=torch.float64)
    up = torch.sin(0.5 * math.pi * (i + 0.5) / ramp) ** 2
    if rising_edge:
        w[:margin] = 0
        w[margin:margin + ramp] = up
    if falling_edge:
        w[length - margin:] = 0
        w[length - margin - ramp:length - margin] = torch.minimum(
            w[length - margin - ramp:length - margin], up.flip(0))
    return w


def tile_window(height: int, width: int, overlap: int, top: bool, bottom: bool,
                left: bool, right: bool) -> torch.Tensor:
    """H×W blending weights for one tile; the flags say which edges touch a neighbour."""
    wy = _ramp(height, overlap, top, bottom)
    wx = _ramp(width, overlap, left, right)
    return (wy[:, None] * wx[None, :]).float()

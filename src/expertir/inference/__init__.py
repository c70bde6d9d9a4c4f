"""Inference: restore an image of any size, whole or in overlapping tiles."""

from expertir.inference.restore import restore, select_device
from expertir.inference.tiling import tile_starts, tile_window

__all__ = ["restore", "select_device", "tile_starts", "tile_window"]

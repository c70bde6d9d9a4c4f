"""Inference: restore an image of any size, whole or in overlapping tiles, within a memory budget."""

from expertir.inference.device import select_device
from expertir.inference.exposure import keep_exposure
from expertir.inference.memory import (
    MemoryProfile, available_memory, format_size, memory_profile, parse_size,
)
from expertir.inference.plan import TilePlan, plan_restore
from expertir.inference.restore import restore
from expertir.inference.tiling import tile_starts, tile_window

__all__ = ["MemoryProfile", "TilePlan", "available_memory", "format_size", "keep_exposure",
           "memory_profile", "parse_size", "plan_restore", "restore", "select_device",
           "tile_starts", "tile_window"]

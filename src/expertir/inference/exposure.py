"""Exposure guard: a restored photo whose highlights already reach white is not brightened.

Low-light enhancement is the only task here that brightens large areas; every other one
keeps the local mean (noise, blur) or lowers it (rain streaks, haze). A network trained on
patches cannot tell an underexposed photo from a properly exposed dark scene (a 64-px
patch of a black object looks like a LOL low-light patch), so the trained models brighten
dark photos that need no brightening (``docs/design.md``, "Exposure guard"). The whole image
can tell them apart: an underexposed photo has its highlights scaled down, a dark scene
keeps its white point. So after the network, where the input's white point (the 99.5th
percentile of the per-pixel channel maximum) is at least :data:`WHITE_EXPOSED`, the output
is divided by its local brightening gain (Gaussian-smoothed output over smoothed input)
beyond a small tolerance; the guard fades in linearly from :data:`WHITE_UNDEREXPOSED` so
that no threshold flips an image between two very different results. Darkening and changes
finer than the smoothing scale (denoising, deblurring, rain removal) are left as the
network made them.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

#: White points at or below this are treated as underexposed: the guard is off.
WHITE_UNDEREXPOSED = 0.7
#: White points at or above this are treated as exposed: the guard is fully on.
WHITE_EXPOSED = 0.9
#: Smoothing scale (pixels) of the local gain.
SIGMA = 4.0
#: Brightening allowed before the guard acts: a gain of 10 % (denoising lifts highlights
#: that clipped noise pulled down by about that much at σ = 50) and 2/255 on the 0–1 scale
#: (quantisation); and the offset that keeps the gain of near-black areas finite.
GAIN_TOLERANCE = 0.10
TOLERANCE = 2 / 255
EPS = 1 / 255


def white_point(image: np.ndarray) -> float:
    """The 99.5th percentile of the per-pixel channel maximum of an H×W×C image in [0, 1]
    (on a regular subsample of at most about 4 million pixels)."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 2**22)))
    return float(np.percentile(image[::step, ::step].max(axis=2), 99.5))


def guard_strength(image: np.ndarray) -> float:
    """How much the guard acts on ``image``: 0 (underexposed) to 1 (white point intact)."""
    ramp = (white_point(image) - WHITE_UNDEREXPOSED) / (WHITE_EXPOSED - WHITE_UNDEREXPOSED)
    return float(np.clip(ramp, 0.0, 1.0))


def keep_exposure(degraded: np.ndarray, restored: np.ndarray, inplace: bool = False,
                  rows: int = 256) -> np.ndarray:
    """``restored`` (H×W×C float32 in [0, 1]) without the brightening that ``degraded``'s
    white point rules out; unchanged when the guard is off. ``inplace`` writes into
    ``restored``, else into a copy.

    It works in bands of ``rows`` rows, each read with the smoothing kernel's reach of
    context above and below, so that the extra memory stays small for any image size; a
    band is written only once the next one has read its context, so the result is the same
    as the whole image at once, in place or not."""
    out = restored if inplace else restored.copy()
    strength = guard_strength(degraded)
    if strength == 0.0:
        return out
    height, reach = out.shape[0], int(4.0 * SIGMA + 0.5)  # gaussian_filter's truncation
    rows, smooth = max(rows, reach), (SIGMA, SIGMA, 0)
    pending = None  # (first row, guarded band) not yet written
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        lo, hi = max(0, top - reach), min(height, bottom + reach)
        gain = (gaussian_filter(restored[lo:hi], smooth, mode="reflect") + EPS) / (
            gaussian_filter(degraded[lo:hi], smooth, mode="reflect") + EPS + TOLERANCE)
        excess = np.maximum(gain[top - lo:bottom - lo] / (1.0 + GAIN_TOLERANCE), 1.0) - 1.0
        if pending is not None:
            out[pending[0]:pending[0] + len(pending[1])] = pending[1]
        pending = (top, np.clip(restored[top:bottom] / (1.0 + strength * excess), 0.0, 1.0))
    out[pending[0]:] = pending[1]
    return out

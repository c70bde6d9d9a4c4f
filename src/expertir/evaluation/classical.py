"""Classical baselines, the floor every learned model must beat (docs/design.md, "Baselines").

Each method restores one :class:`~expertir.data.benchmarks.Sample` of a task set and says
which task sets it applies to:

* :class:`Identity` — the degraded input itself, for every task.
* :class:`BM3D` — block-matching and 3D filtering (Dabov et al., TIP 2007) from the
  ``bm3d`` package, noise only; needs σ. Gray images (three equal channels) run on one
  channel and are replicated, so the PSNR is the gray PSNR; colour images use CBM3D
  (``bm3d_rgb``, YCbCr-like opponent transform). BM3D takes seconds to a minute per image
  and its output depends only on the input, σ and the package version, so each output is
  kept in ``bm3d/`` of the user's cache folder (:func:`expertir.cache.cache_dir`) under a
  hash of exactly those; a results run after the first one reads them back.
* :class:`NonLocalMeans` — OpenCV's fast non-local means (Buades et al., CVPR 2005), noise
  only; needs σ. Filter strength ``h = 0.8 σ`` (7×7 patches, 21×21 search window),
  chosen on six BSD400 training images at σ = 15/25/50 (h/σ ∈ {0.6, 0.8, 1.0, 1.2}).
  Colour images are filtered in RGB with one joint patch distance.
* :class:`DarkChannelPrior` — He et al., CVPR 2009 (TPAMI 2011), haze only: dark channel
  over 15×15 patches, atmospheric light from the brightest 0.1 % of the dark channel,
  ``t = 1 − ω·dark(I/A)`` with ω = 0.95, refined by a guided filter (He et al., ECCV 2010;
  radius 60, ε = 1e-4, guide = the gray input), ``J = (I − A)/max(t, 0.1) + A``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from expertir.atomic import atomic_path
from expertir.cache import cache_dir
from expertir.errors import ExpertirError

#: Name → class of every classical method (the ``--method`` choices of ``expertir eval``).
CLASSICAL_METHODS: dict[str, type] = {}


def _register(cls):
    CLASSICAL_METHODS[cls.name] = cls
    return cls


def noise_sigma(task_set, default: float | None = None) -> float | None:
    """σ (0–255 scale) of a denoising task set: its own ``sigma``, else the ``_NN`` of a
    ``denoise_NN`` task id, else ``default`` (the ``--sigma`` option)."""
    if getattr(task_set, "sigma", None) is not None:
        return float(task_set.sigma)
    match = re.fullmatch(r"denoise_(\d+(?:\.\d+)?)", task_set.task)
    return float(match.group(1)) if match else default


def _is_gray(sample) -> bool:
    img = sample.degraded
    return bool(getattr(sample, "gray", False)) or bool(
        np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


class ClassicalMethod(ABC):
    """Base: ``applies_to(task_set)`` and ``restore(sample, task_set) -> H×W×3 float32``."""

    name = ""
    description = ""

    def __init__(self, sigma: float | None = None):
        self.sigma = sigma  # fallback σ for sets whose task id carries none

    def applies_to(self, task_set) -> bool:
        return True

    @abstractmethod
    def restore(self, sample, task_set) -> np.ndarray:
        """The restored image of ``sample`` (a task set this method applies to)."""


class _Denoiser(ClassicalMethod):
    def applies_to(self, task_set) -> bool:
        return noise_sigma(task_set, self.sigma) is not None

    def restore(self, sample, task_set) -> np.ndarray:
        sigma = noise_sigma(task_set, self.sigma)
        if sigma is None:
            raise ExpertirError(f"{self.name} needs the noise σ of {task_set.name}: use --sigma")
        if _is_gray(sample):
            out = self.denoise(sample.degraded[..., :1], sigma)
            return np.repeat(out.reshape(*out.shape[:2], 1), 3, axis=2).astype(np.float32)
        return self.denoise(sample.degraded, sigma).astype(np.float32)

    @abstractmethod
    def denoise(self, img: np.ndarray, sigma: float) -> np.ndarray:
        """H×W×1 or H×W×3 float in [0,1], σ on the 0–255 scale -> same shape (or H×W)."""


@_register
class Identity(ClassicalMethod):
    name = "identity"
    description = "the degraded input, unchanged"

    def restore(self, sample, task_set) -> np.ndarray:
        return sample.degraded


@_register
class BM3D(_Denoiser):
    name = "bm3d"
    description = "BM3D (bm3d package; gray: one channel, colour: CBM3D), σ given"

    def denoise(self, img: np.ndarray, sigma: float) -> np.ndarray:
        path = self.cache_path(img, sigma)
        shape = img.shape[:2] if img.shape[2] == 1 else img.shape
        try:
            out = np.load(path, allow_pickle=False)
            if out.shape == shape:
                return out
        except (OSError, ValueError):
            pass  # not cached yet, or an unreadable file: compute it again
        import bm3d

        if img.shape[2] == 1:
            out = bm3d.bm3d(img[..., 0].astype(np.float64), sigma_psd=sigma / 255.0)
        else:
            out = bm3d.bm3d_rgb(img.astype(np.float64), sigma_psd=sigma / 255.0)
        out = np.clip(out, 0, 1).astype(np.float32)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, out)
        except OSError:
            pass  # a cache that cannot be written only costs the next run the time
        return out

    @staticmethod
    def cache_path(img: np.ndarray, sigma: float) -> Path:
        """Where the output for this input and σ is cached (see the module docstring)."""
        img = np.ascontiguousarray(img)
        key = hashlib.sha256(f"bm3d {importlib.metadata.version('bm3d')} sigma={float(sigma)!r} "
                             f"{img.dtype} {img.shape}".encode())
        key.update(img.tobytes())
        return cache_dir() / "bm3d" / f"{key.hexdigest()[:32]}.npy"


@_register
class NonLocalMeans(_Denoiser):
    name = "nlm"
    description = "OpenCV fast non-local means, h = 0.8σ, 7×7 patches, 21×21 search, σ given"
    h_per_sigma = 0.8

    def denoise(self, img: np.ndarray, sigma: float) -> np.ndarray:
        src = _to_uint8(img)
        src = src[..., 0] if src.shape[2] == 1 else np.ascontiguousarray(src)
        out = cv2.fastNlMeansDenoising(src, None, h=float(self.h_per_sigma * sigma),
                                       templateWindowSize=7, searchWindowSize=21)
        return out.astype(np.float32) / 255.0


def box_mean(img: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(img, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Gray guided filter (He et al., ECCV 2010, Algorithm 1)."""
    mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
    cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def dark_channel(img: np.ndarray, patch: int) -> np.ndarray:
    """Minimum over colour channels, then over a ``patch``×``patch`` window (He et al. Eq. 5)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(img.min(axis=2), kernel, borderType=cv2.BORDER_REFLECT)


@_register
class DarkChannelPrior(ClassicalMethod):
    name = "dcp"
    description = "dark channel prior (He et al. 2009) with guided-filter refinement"
    patch, omega, t_min, top_fraction = 15, 0.95, 0.1, 0.001
    radius, eps = 60, 1e-4

    def applies_to(self, task_set) -> bool:
        return task_set.task.startswith("dehaze")

    def restore(self, sample, task_set) -> np.ndarray:
        return self.dehaze(sample.degraded)

    def dehaze(self, img: np.ndarray) -> np.ndarray:
        img = img.astype(np.float32)
        dark = dark_channel(img, self.patch)
        count = max(1, int(dark.size * self.top_fraction))
        brightest = np.argsort(dark.ravel())[-count:]
        pixels = img.reshape(-1, 3)[brightest]
        airlight = pixels[pixels.sum(axis=1).argmax()].clip(1e-3, 1)  # He et al. Sec. 4.4
        transmission = 1.0 - self.omega * dark_channel(img / airlight, self.patch)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        radius = min(self.radius, max(1, min(img.shape[:2]) // 4))
        transmission = guided_filter(gray, transmission.astype(np.float32), radius, self.eps)
        t = np.maximum(transmission, self.t_min)[..., None]
        return np.clip((img - airlight) / t + airlight, 0, 1).astype(np.float32)


def make_classical(name: str, sigma: float | None = None) -> ClassicalMethod:
    """A classical method by name (``identity``, ``bm3d``, ``nlm``, ``dcp``)."""
    if name not in CLASSICAL_METHODS:
        raise ExpertirError(f"unknown method {name!r}; choose from {', '.join(CLASSICAL_METHODS)}")
    return CLASSICAL_METHODS[name](sigma=sigma)

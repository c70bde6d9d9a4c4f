"""PSNR and SSIM with the PromptIR / AdaIR / MoCE-IR protocol, computed by scikit-image.

Protocol: RGB in [0, 1] (or the BT.601 luma channel with ``y_channel=True``), the image
centre-cropped to a multiple of 16 as PromptIR's test loader does (``crop_img``), no border
crop, ``data_range=1``; SSIM with scikit-image's default 7×7 uniform window, computed per
channel and averaged.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

CROP_BASE = 16


def protocol_line(y_channel: bool = False, crop: int = CROP_BASE) -> str:
    """One line describing how the numbers of a table were computed."""
    space = "Y (BT.601)" if y_channel else "RGB"
    cropping = f"centre crop to a multiple of {crop}" if crop > 1 else "no crop"
    return (f"PSNR/SSIM on {space} in [0,1], {cropping}, no border crop; "
            f"SSIM: 7x7 uniform window (scikit-image); Gaussian noise seeded with 0")


PROTOCOL_LINE = protocol_line()


def crop_to_multiple(img: np.ndarray, base: int = CROP_BASE) -> np.ndarray:
    """Centre-crop H and W down to multiples of ``base`` (PromptIR's ``crop_img``)."""
    h, w = img.shape[:2]
    ch, cw = h % base, w % base
    return img[ch // 2: h - ch + ch // 2, cw // 2: w - cw + cw // 2]


def _prepare(pred: np.ndarray, target: np.ndarray, y_channel: bool, crop: int):
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs target {target.shape}")
    pred = np.clip(np.asarray(pred, dtype=np.float64), 0, 1)
    target = np.clip(np.asarray(target, dtype=np.float64), 0, 1)
    if crop > 1 and min(pred.shape[:2]) >= crop:
        pred, target = crop_to_multiple(pred, crop), crop_to_multiple(target, crop)
    if y_channel and pred.ndim == 3:
        pred = rgb2ycbcr(pred)[..., 0] / 255.0
        target = rgb2ycbcr(target)[..., 0] / 255.0
    return pred, target


def psnr(pred: np.ndarray, target: np.ndarray, y_channel: bool = False,
         crop: int = CROP_BASE) -> float:
    """PSNR in dB of H×W×C (or H×W) float images in [0, 1]; ``inf`` for identical images."""
    p, t = _prepare(pred, target, y_channel, crop)
    if np.array_equal(p, t):
        return float("inf")
    return float(peak_signal_noise_ratio(t, p, data_range=1.0))


def ssim(pred: np.ndarray, target: np.ndarray, y_channel: bool = False,
         crop: int = CROP_BASE) -> float:
    """SSIM of H×W×C (or H×W) float images in [0, 1]."""
    p, t = _prepare(pred, target, y_channel, crop)
    channel_axis = 2 if p.ndim == 3 else None
    return float(structural_similarity(t, p, data_range=1.0, channel_axis=channel_axis))


def torch_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of NCHW batches in [0, 1]; for validation during training."""
    mse = (pred.clamp(0, 1) - target.clamp(0, 1)).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


#: Side in pixels of SLER-IR's routing regions, where a seam would appear.
SEAM_REGION = 16


def _border_to_inner_gradient(img: np.ndarray, region: int) -> float:
    g = np.asarray(img, np.float64)
    g = g.mean(axis=2) if g.ndim == 3 else g
    gx, gy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    bx = (np.arange(1, g.shape[1]) % region) == 0  # step between column x-1 and x, x on a border
    by = (np.arange(1, g.shape[0]) % region) == 0
    border = np.concatenate([gx[:, bx].ravel(), gy[by, :].ravel()])
    inner = np.concatenate([gx[:, ~bx].ravel(), gy[~by, :].ravel()])
    if not border.size or not inner.size:
        return float("nan")
    return float(border.mean() / max(inner.mean(), 1e-12))


def seam_ratio(output: np.ndarray, reference: np.ndarray, region: int = SEAM_REGION) -> float:
    """How much more the output changes across the borders of the ``region``-px grid than
    inside the regions, relative to the same ratio of ``reference`` (the input): mean
    gradient magnitude on the borders / mean inside, output over input. 1.0 means no seams
    were added; region-wise processing that treats neighbouring regions differently raises
    it. The grid starts at the top-left pixel, as the models' region grid does."""
    ref = _border_to_inner_gradient(reference, region)
    return _border_to_inner_gradient(output, region) / ref if ref > 0 else float("nan")

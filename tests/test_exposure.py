"""The exposure guard: properly exposed photos are not brightened; underexposed ones are."""

import numpy as np
import torch
import torch.nn as nn

from expertir.evaluation import build_methods
from expertir.inference import restore
from expertir.inference.exposure import guard_strength, keep_exposure
from expertir.metrics import psnr

from conftest import smooth_image


class Brighten(nn.Module):
    """Lifts the shadows as a low-light enhancer does: x ** 0.4."""

    def forward(self, x):
        return x.clamp(0, 1) ** 0.4


class Darken(nn.Module):
    """Lowers every pixel as haze removal does."""

    def forward(self, x):
        return 0.8 * x


def dark_scene(h=96, w=128) -> np.ndarray:
    """A dark photo whose highlights still reach white (a lamp in a dark room)."""
    img = smooth_image(h, w) ** 3
    img[10:20, 10:30] = 1.0
    return img


def test_a_dark_scene_keeps_its_exposure():
    img = dark_scene()
    assert guard_strength(img) == 1.0
    raw = restore(Brighten(), img, device="cpu", exposure_guard=False)
    kept = restore(Brighten(), img, device="cpu")
    assert psnr(raw, img) < 15  # the network alone brightens it a lot
    assert psnr(kept, img) > psnr(raw, img) + 8
    assert float((kept - img).mean()) < 0.25 * float((raw - img).mean())  # 10 % gain allowed


def test_an_underexposed_photo_is_brightened_as_the_network_says():
    img = dark_scene() * 0.3  # highlights scaled down: underexposed
    assert guard_strength(img) == 0.0
    raw = restore(Brighten(), img, device="cpu", exposure_guard=False)
    np.testing.assert_array_equal(restore(Brighten(), img, device="cpu"), raw)


def test_darkening_and_fine_detail_pass_unchanged():
    img = smooth_image(96, 128) * 0.8 + 0.2
    darker = Darken()(torch.from_numpy(img)).numpy()
    np.testing.assert_array_equal(keep_exposure(img, darker), darker)
    # A zero-mean pattern finer than the smoothing scale (what denoising or deblurring
    # change) is kept almost whole.
    pattern = 0.05 * np.where((np.indices(img.shape[:2]).sum(0) % 2) == 0, 1, -1)[..., None]
    detailed = np.clip(img + pattern, 0, 1).astype(np.float32)
    kept = keep_exposure(img, detailed) - img
    change = detailed - img
    assert float((kept * change).sum() / (change * change).sum()) > 0.9


def test_the_guard_is_midway_between_the_two_white_points():
    img = dark_scene()
    img[img > 0.8] = 0.8  # white point 0.8: halfway between 0.7 and 0.9
    assert abs(guard_strength(img) - 0.5) < 1e-6


def test_evaluation_can_measure_the_raw_network():
    guarded, = build_methods(models=["restormer_tiny"], untrained=True)
    raw, = build_methods(models=["restormer_tiny"], untrained=True, exposure_guard=False)
    assert guarded.exposure_guard and not raw.exposure_guard
    assert "without the exposure guard" in raw.description
    assert "with the exposure guard" in guarded.description


def test_bands_in_place_equal_the_whole_image_at_once():
    img = dark_scene(150, 70)
    brightened = np.sqrt(img).astype(np.float32)
    whole = keep_exposure(img, brightened, rows=10**6)
    for rows in (16, 37):
        np.testing.assert_allclose(keep_exposure(img, brightened, rows=rows), whole, atol=1e-6)
        inplace = brightened.copy()
        assert keep_exposure(img, inplace, inplace=True, rows=rows) is inplace
        np.testing.assert_allclose(inplace, whole, atol=1e-6)


def test_restore_reports_what_the_guard_took_back():
    heard = []
    restore(Brighten(), dark_scene(), device="cpu", on_exposure=heard.append)
    assert len(heard) == 1 and heard[0] > 20 / 255
    heard.clear()
    restore(Brighten(), dark_scene() * 0.3, device="cpu", on_exposure=heard.append)
    assert heard == [0.0]

import numpy as np
import pytest
import torch
import torch.nn as nn

from expertir.inference import restore, tile_starts, tile_window
from expertir.metrics import psnr
from expertir.models import build_model

from conftest import smooth_image


class LocalNet(nn.Module):
    """Three 3x3 convolutions: receptive radius 3, far below overlap // 4."""

    size_multiple = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                 nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return torch.sigmoid(self.net(x))


@pytest.mark.parametrize("hw", [(200, 300), (131, 77), (64, 64)])
def test_tiled_equals_untiled_for_a_local_model(hw):
    torch.manual_seed(0)
    model, img = LocalNet(), np.random.default_rng(0).random((*hw, 3), dtype=np.float32)
    whole = restore(model, img, device="cpu")
    tiled = restore(model, img, tile=64, overlap=32, device="cpu", tile_batch=3)
    assert whole.shape == img.shape
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)  # float rounding of the blend only


def test_tiled_transformer_is_close_to_untiled():
    """MDTA attends over all pixels of a tile, so tiles differ slightly; stated tolerance
    at tile 64 / overlap 32 on a smooth image: PSNR(tiled, whole) > 40 dB, max |diff| < 0.05."""
    torch.manual_seed(0)
    model, img = build_model("restormer_tiny"), smooth_image(160, 224)
    whole = restore(model, img, device="cpu")
    tiled = restore(model, img, tile=64, overlap=32, device="cpu")
    assert psnr(tiled, whole, crop=1) > 40
    assert np.abs(tiled - whole).max() < 0.05


def test_window_blends_to_one_and_grid_covers():
    assert tile_starts(300, 64, 32) == [0, 32, 64, 96, 128, 160, 192, 224, 236]
    assert tile_starts(50, 64, 32) == [0]
    h = 300
    total = torch.zeros(h)
    for s in tile_starts(h, 64, 32):
        total[s:s + 64] += tile_window(64, 1, 32, s > 0, s + 64 < h, False, False)[:, 0]
    assert (total > 0.99).all()  # every pixel fully covered, no seam dips
    w = tile_window(64, 64, 32, True, True, True, True)
    assert w[:8].sum() == 0 and w[32, 32] == 1


def test_restore_keeps_odd_sizes_and_tensor_type():
    model = build_model("restormer_tiny")
    out = restore(model, torch.rand(2, 3, 37, 53), device="cpu")
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 37, 53)
    assert restore(model, np.zeros((1, 1, 3), np.float32), device="cpu").shape == (1, 1, 3)

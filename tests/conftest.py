import os

from expertir.threads import set_openmp_defaults

set_openmp_defaults()  # before torch loads: the suite shares the cores with other work

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Small, steady CPU runs.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image (float32 H×W×3 in [0,1]) — natural-ish statistics."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return img.clamp(0, 1)[0].permute(1, 2, 0).numpy().astype(np.float32)

"""The shared Restormer backbone: the documented base size and the method hooks.
(Every registered model's shapes, config and checkpoints: ``test_models.py``.)"""

import pytest
import torch

from expertir.models import build_model
from expertir.models.backbone import BACKBONE_PRESETS, RestormerBackbone, backbone_config
from expertir.models.blocks import GDFN, ForwardContext

pytestmark = pytest.mark.usefixtures("one_thread")


def test_base_preset_is_the_documented_restormer():
    cfg = BACKBONE_PRESETS["base"]
    assert (cfg.dim, cfg.num_blocks, cfg.num_refinement_blocks, cfg.heads) == (48, (4, 6, 6, 8), 4, (1, 2, 4, 8))
    with torch.device("meta"):  # shapes only
        params = sum(p.numel() for p in build_model("restormer_base").parameters())
    assert 25e6 < params < 27e6  # Restormer: 26.1 M


def test_every_preset_builds_and_keeps_its_size_in_the_config():
    with torch.device("meta"):
        for size in BACKBONE_PRESETS:
            model = build_model(f"restormer_{size}")
            assert model.backbone.cfg == BACKBONE_PRESETS[size] and model.config == {"size": size}


def test_hooks_replace_ffn_and_add_branches():
    seen = []

    class Branch(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x, ctx):
            seen.append(self.name)
            return torch.zeros_like(x)

    cfg = backbone_config("tiny")
    plain = RestormerBackbone(cfg)
    hooked = RestormerBackbone(cfg, make_branch=lambda s: Branch(s.name) if s.stage == "decoder" else None,
                               make_ffn=lambda s: GDFN(s.dim, cfg.ffn_expansion_factor, cfg.bias))
    hooked.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(x, ForwardContext()), hooked(x, ForwardContext()))
    n_decoder = sum(cfg.num_blocks[:3])
    assert len(seen) == n_decoder and seen[0].startswith("decoder3")


def _per_pixel_reference(q, k, v, temperature, window):
    """local_channel_attention written out: every window's attention from its own pixels,
    each pixel's the bilinear blend of the four windows around it."""
    import torch.nn.functional as F

    b, heads, d, h, w = q.shape
    s = window // 2

    def attention(i, j):  # window (i, j) covers the cells i-1..i and j-1..j
        y0, y1, x0, x1 = max(0, (i - 1) * s), min(h, (i + 1) * s), max(0, (j - 1) * s), min(w, (j + 1) * s)
        qq, kk = (F.normalize(t[..., y0:y1, x0:x1].reshape(b, heads, d, -1), dim=-1) for t in (q, k))
        return ((qq @ kk.transpose(-1, -2)) * temperature.view(1, -1, 1, 1)).softmax(-1)

    out = torch.zeros_like(v)
    for y in range(h):
        for x in range(w):
            fy, fx = (y % s + 0.5) / s, (x % s + 0.5) / s
            m = sum(wy * wx * attention(y // s + dy, x // s + dx)
                    for dy, wy in ((0, 1 - fy), (1, fy)) for dx, wx in ((0, 1 - fx), (1, fx)))
            out[..., y, x] = (m @ v[..., y, x, None])[..., 0]
    return out


def test_local_attention_is_the_blend_of_its_windows():
    from expertir.models.blocks import local_channel_attention

    q, k, v = torch.randn(3, 2, 2, 4, 13, 19, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    temperature = torch.tensor([1.5, 0.7], dtype=torch.float64)
    torch.testing.assert_close(local_channel_attention(q, k, v, temperature, 8),
                               _per_pixel_reference(q, k, v, temperature, 8))


def test_attention_window_acts_at_inference_on_larger_images_only():
    torch.manual_seed(0)
    windowed = build_model("restormer_tiny", attention_window=32)
    whole = build_model("restormer_tiny")
    whole.load_state_dict(windowed.state_dict())
    small, large = torch.rand(1, 3, 32, 24), torch.rand(1, 3, 48, 72)
    with torch.no_grad():
        torch.testing.assert_close(windowed.train()(large), whole.train()(large))  # training: whole map
        windowed.eval(), whole.eval()
        torch.testing.assert_close(windowed(small), whole(small))  # fits one window
        assert (windowed(large) - whole(large)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="multiple of 16"):
        backbone_config("tiny", attention_window=24)

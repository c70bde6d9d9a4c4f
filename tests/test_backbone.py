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

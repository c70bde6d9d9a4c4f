import pytest
import torch

from expertir.models import build_model, list_models
from expertir.models.backbone import BACKBONE_PRESETS, RestormerBackbone, backbone_config
from expertir.models.blocks import GDFN, ForwardContext


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
@pytest.mark.parametrize("hw", [(37, 53), (1, 1), (16, 24)])
def test_every_preset_keeps_the_input_size(size, hw):
    model = build_model(f"restormer_{size}").eval()
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_base_preset_is_the_documented_restormer():
    cfg = BACKBONE_PRESETS["base"]
    assert (cfg.dim, cfg.num_blocks, cfg.num_refinement_blocks, cfg.heads) == (48, (4, 6, 6, 8), 4, (1, 2, 4, 8))
    params = sum(p.numel() for p in build_model("restormer_base").parameters())
    assert 25e6 < params < 27e6  # Restormer: 26.1 M


def test_registry_lists_and_rejects():
    assert {"restormer", "restormer_tiny", "restormer_small", "restormer_base"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("no_such_model")
    with pytest.raises(ValueError, match="unknown backbone option"):
        build_model("restormer_tiny", widht=3)


def test_config_rebuilds_the_same_architecture():
    model = build_model("restormer_tiny", dim=8)
    again = build_model("restormer", **model.config)
    assert [k for k in model.state_dict()] == [k for k in again.state_dict()]
    assert again.backbone.cfg.dim == 8


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


def test_return_aux_gives_losses_dict():
    out, aux = build_model("restormer_tiny")(torch.rand(2, 3, 8, 8), return_aux=True)
    assert out.shape == (2, 3, 8, 8) and aux["losses"] == {}

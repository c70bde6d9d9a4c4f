"""PromptIR baseline: registration, shapes, prompt weights, rebuild from config, training signal."""

import torch

from expertir.models import build_model, list_models
from expertir.models.promptir import PromptBlock, PromptGenBlock


def test_registered_with_presets():
    assert {"promptir", "promptir_tiny", "promptir_small", "promptir_base"} <= set(list_models())


def test_forward_any_size_and_prompt_weights():
    torch.manual_seed(0)
    model = build_model("promptir_tiny").eval()
    x = torch.rand(2, 3, 21, 27)
    out, aux = model(x, return_aux=True)
    assert out.shape == x.shape
    assert set(aux["prompt_weights"]) == {1, 2, 3}
    for w in aux["prompt_weights"].values():
        assert w.shape == (2, 5)
        assert torch.allclose(w.sum(dim=1), torch.ones(2))
    assert aux["losses"] == {}


def test_prompt_blocks_sit_in_decoder_and_add_parameters():
    model = build_model("promptir_tiny")
    base = build_model("restormer_tiny")
    hooks = [model.backbone.hook1, model.backbone.hook2, model.backbone.hook3]
    assert all(isinstance(h, PromptBlock) for h in hooks)
    extra = sum(p.numel() for h in hooks for p in h.parameters())
    n_model = sum(p.numel() for p in model.parameters())
    assert n_model == sum(p.numel() for p in base.parameters()) + extra


def test_prompt_depends_on_input_features():
    torch.manual_seed(0)
    gen = PromptGenBlock(feature_dim=8, prompt_dim=4, prompt_len=3, prompt_size=4)
    a = torch.rand(1, 8, 10, 12)
    prompt_a, wa = gen(a)
    prompt_b, wb = gen(-a)
    assert prompt_a.shape == (1, 4, 10, 12)
    assert not torch.allclose(wa, wb) and not torch.allclose(prompt_a, prompt_b)


def test_rebuild_from_config_and_gradients_reach_prompts():
    torch.manual_seed(0)
    model = build_model("promptir_tiny", prompt_len=3)
    clone = build_model("promptir", **model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(model.eval()(x), clone.eval()(x))
    model.train()
    model(x).abs().mean().backward()
    for hook in (model.backbone.hook1, model.backbone.hook2, model.backbone.hook3):
        assert hook.generate.components.grad is not None
        assert hook.generate.components.grad.abs().sum() > 0

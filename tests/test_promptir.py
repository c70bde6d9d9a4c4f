"""PromptIR baseline: prompt weights, where the prompt blocks sit, prompts that depend on the
input and receive gradient. (Shapes, config and checkpoints: ``test_models.py``.)"""

import pytest
import torch

from conftest import seeded_model
from expertir.models import build_model
from expertir.models.promptir import PromptBlock, PromptGenBlock

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prompt_weights_are_a_softmax_per_level():
    model = seeded_model("promptir_tiny")
    with torch.no_grad():
        _, aux = model(torch.rand(2, 3, 21, 27), return_aux=True)
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


def test_gradients_reach_the_prompt_components():
    model = seeded_model("promptir_tiny", prompt_len=3).train()
    model(torch.rand(1, 3, 16, 16)).abs().mean().backward()
    for hook in (model.backbone.hook1, model.backbone.hook2, model.backbone.hook3):
        assert hook.generate.components.shape[0] == 3
        assert hook.generate.components.grad is not None
        assert hook.generate.components.grad.abs().sum() > 0

"""CEA: exact start from the backbone, the assembly rule, token-wise updates, linear cost
and small overhead, and a short CPU training run. (Shapes, config and checkpoints:
``test_models.py``.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from conftest import seeded_model, smooth_image
from expertir.data.degradations import gaussian_noise, haze, low_light
from expertir.models import build_model
from expertir.models.cea import PLACEMENTS, ContinuousAssemblyBranch
from expertir.models.hyper_adapter import CrossAttentionHyperAdapter, assemble_tokenwise

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_cea(**options):
    return seeded_model("cea_tiny", **options)


def _branches(model) -> list[ContinuousAssemblyBranch]:
    return [m for m in model.modules() if isinstance(m, ContinuousAssemblyBranch)]


def _set_gamma(model, value: float) -> None:
    with torch.no_grad():
        for branch in _branches(model):
            branch.gamma.fill_(value)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="placement"):
        build_model("cea_tiny", placement="middle")
    with pytest.raises(ValueError, match="rank"):
        build_model("cea_tiny", rank=0)


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_placement_selects_the_adapted_stages(placement):
    model = _tiny_cea(placement=placement)
    adapted = {b.site.stage for b in model.backbone.blocks() if b.branch is not None}
    plain = {b.site.stage for b in model.backbone.blocks() if b.branch is None}
    assert adapted == set(PLACEMENTS[placement])
    assert not adapted & plain


def test_untrained_cea_equals_its_backbone_exactly():
    torch.manual_seed(1)
    restormer = build_model("restormer_tiny").eval()
    cea = _tiny_cea()
    own = cea.backbone.state_dict()
    shared = restormer.backbone.state_dict()
    # Every backbone weight has a slot in CEA; CEA's extra weights are its branches only.
    assert set(shared) <= set(own)
    assert all(".branch." in k for k in set(own) - set(shared))
    missing, unexpected = cea.backbone.load_state_dict(shared, strict=False)
    assert not unexpected and all(".branch." in k for k in missing)

    x = torch.rand(2, 3, 37, 45)  # not a multiple of 8: exercises padding too
    with torch.no_grad():
        reference = restormer(x)
        out = cea(x)
        assert out.shape == x.shape
        assert torch.equal(out, reference)
        # The branches are wired in: a non-zero gamma changes the output.
        _set_gamma(cea, 0.5)
        assert not torch.allclose(cea(x), reference, atol=1e-4)


def test_fast_assembly_equals_explicit_per_token_computation():
    torch.manual_seed(2)
    b, c, h, w, r = 3, 24, 5, 7, 8
    x = torch.randn(b, c, h, w)
    bases, directions = torch.randn(b, r, c), torch.randn(b, r, c)
    delta, affinity = assemble_tokenwise(x, bases, directions)
    assert delta.shape == x.shape and affinity.shape == (b, r, h, w)

    for n in range(b):
        update = bases[n].T @ directions[n] / math.sqrt(c)  # W_x = A^T B / sqrt(C), C x C
        for i in range(h):
            for j in range(w):
                token = x[n, :, i, j]
                assert torch.allclose(delta[n, :, i, j], token @ update, atol=1e-5)
                # The same update as the sum over rank-wise components.
                per_rank = torch.stack([token @ bases[n, k] / math.sqrt(c) for k in range(r)])
                assert torch.allclose(affinity[n, :, i, j], per_rank, atol=1e-5)
                assert torch.allclose(delta[n, :, i, j], per_rank @ directions[n], atol=1e-5)


def _pairs(seeds: list[int], kinds: list[int], size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, degraded) batches: smooth images, each with noise (sigma 25), haze or low
    light (``kinds`` 0, 1, 2), seeded by ``seeds``."""
    fns = (lambda img, s: gaussian_noise(img, 25, s), haze, low_light)
    clean = [smooth_image(size, size, seed=s) for s in seeds]
    degraded = [fns[k](img, s) for img, s, k in zip(clean, seeds, kinds)]
    return tuple(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) for images in (clean, degraded))


def test_bases_depend_on_the_image_and_updates_on_the_token():
    model = _tiny_cea()
    _set_gamma(model, 0.1)
    # Noisy, then the same hazy image twice: the adapter is per image, not per batch.
    _, batch = _pairs([3, 3, 3], [0, 1, 1])
    with torch.no_grad():
        _, aux = model(batch, return_aux=True)

    sites = {b.site.name for b in model.backbone.blocks() if b.branch is not None}
    assert set(aux["routing"]) == set(aux["bases"]) == set(aux["directions"]) == sites
    assert aux["losses"] == {}
    for site in sites:
        a, bdir, affinity = aux["bases"][site], aux["directions"][site], aux["routing"][site]
        assert a.shape == bdir.shape and a.shape[:2] == (3, model.config["rank"])
        assert affinity.shape[:2] == (3, model.config["rank"])
        # Different images give different (A, B); the same image gives the same.
        assert not torch.allclose(a[0], a[1], atol=1e-4), site
        assert not torch.allclose(bdir[0], bdir[1], atol=1e-4), site
        assert torch.allclose(a[1], a[2], atol=1e-6) and torch.allclose(bdir[1], bdir[2], atol=1e-6)
        # Token-wise: the affinities vary over the image, and the per-token updates
        # (rows of affinity^T B) span several directions, not one global modulation.
        tokens = affinity[0].flatten(1).T  # (N, r)
        assert tokens.std(dim=0).min() > 1e-4, site
        updates = tokens @ bdir[0]  # (N, C)
        sv = torch.linalg.svdvals(updates)
        assert sv[1] > 1e-3 * sv[0], site


def _count_flops(model, size: int) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, size, size, device="meta"))
    return counter.get_total_flops()


def test_adapter_shapes_and_its_cost_does_not_grow_with_the_image():
    adapter = CrossAttentionHyperAdapter(dim=20, rank=5, grid=3, hidden=8)
    counts = []
    for h, w in ((11, 13), (44, 52)):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            bases, directions = adapter(torch.randn(2, 20, h, w))
        assert bases.shape == directions.shape == (2, 5, 20)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0  # the pooled grid is fixed: only the assembly is O(N)


def test_cost_is_linear_in_pixels_and_adapters_are_light():
    # Weights on the meta device: FLOPs and parameter counts need shapes only.
    with torch.device("meta"):
        backbone = build_model("restormer_base")
        cea = build_model("cea_base")
    assert cea.config["placement"] == "all"
    params_backbone = sum(p.numel() for p in backbone.parameters())
    params_cea = sum(p.numel() for p in cea.parameters())
    flops_backbone = _count_flops(backbone, 256)
    flops_cea, flops_cea_128 = _count_flops(cea, 256), _count_flops(cea, 128)
    extra_params = params_cea / params_backbone - 1
    extra_flops = flops_cea / flops_backbone - 1
    ratio = flops_cea / flops_cea_128
    print(f"\nbase backbone: {params_backbone / 1e6:.3f} M params, {flops_backbone / 1e9:.2f} GFLOPs @256^2"
          f"\ncea_base:      {params_cea / 1e6:.3f} M params (+{100 * extra_params:.2f}%), "
          f"{flops_cea / 1e9:.2f} GFLOPs @256^2 (+{100 * extra_flops:.2f}%)"
          f"\ncea_base FLOPs 256^2 / 128^2 = {ratio:.4f}")
    assert 0 < extra_params <= 0.10
    assert 0 < extra_flops <= 0.05
    assert abs(ratio - 4) <= 0.08


def test_trains_without_nan_and_loss_goes_down():
    torch.manual_seed(4)
    model = build_model("cea_tiny").train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    losses = []
    for step in range(50):
        clean, degraded = _pairs([6 * step + k for k in range(6)], [k % 3 for k in range(6)])
        out, aux = model(degraded, return_aux=True)
        loss = F.l1_loss(out, clean) + sum(aux["losses"].values(), torch.zeros(()))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    print(f"\nL1 loss: first 5 steps {first:.4f}, last 10 steps {last:.4f}")
    assert last < 0.8 * first, (first, last)
    # The assembly branches took part in training: gamma has left zero.
    assert max(b.gamma.abs().max().item() for b in _branches(model)) > 0

"""CEA (design §4): exact start from the backbone, the assembly rule, token-wise updates,
linear cost and small overhead, and a short CPU training run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from expertir.models import build_model, list_models
from expertir.models.cea import PLACEMENTS, ContinuousAssemblyBranch
from expertir.models.hyper_adapter import CrossAttentionHyperAdapter, assemble_tokenwise


def _tiny_cea(**cfg):
    torch.manual_seed(0)
    return build_model("cea_tiny", **cfg).eval()


def _branches(model) -> list[ContinuousAssemblyBranch]:
    return [m for m in model.modules() if isinstance(m, ContinuousAssemblyBranch)]


def _set_gamma(model, value: float) -> None:
    with torch.no_grad():
        for branch in _branches(model):
            branch.gamma.fill_(value)


def test_registered_presets_and_config_rebuild():
    assert {"cea", "cea_tiny", "cea_small", "cea_base"} <= set(list_models())
    model = _tiny_cea(rank=4, grid=4, placement="decoder")
    rebuilt = build_model("cea", **model.config)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
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


def _degrade(clean: torch.Tensor, kind: int, gen: torch.Generator) -> torch.Tensor:
    """Noise (sigma 25), haze (atmospheric model) or low light (dark gamma curve)."""
    if kind == 0:
        return (clean + 25 / 255 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    if kind == 1:
        t = 0.4 + 0.3 * torch.rand(1, generator=gen)
        return clean * t + 0.9 * (1 - t)
    return 0.35 * clean ** 1.5


def _smooth_images(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random smooth colour images: coarse noise at two scales, upsampled, in [0, 1]."""
    img = sum(F.interpolate(torch.rand(n, 3, s, s, generator=gen), size=size, mode="bicubic",
                            align_corners=False) for s in (4, 9)) / 2
    return img.clamp(0, 1)


def test_bases_depend_on_the_image_and_updates_on_the_token():
    model = _tiny_cea()
    _set_gamma(model, 0.1)
    gen = torch.Generator().manual_seed(3)
    clean = _smooth_images(1, 32, gen)
    batch = torch.cat([_degrade(clean, 0, gen), _degrade(clean, 1, gen), _degrade(clean, 1, gen)])
    batch[2] = batch[1]  # the same image twice: the adapter is per image, not per batch
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


@pytest.fixture
def one_thread():
    """Small CPU tensors: one thread is faster than two fighting for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_trains_without_nan_and_loss_goes_down(one_thread):
    torch.manual_seed(4)
    model = build_model("cea_tiny").train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(5)
    losses = []
    for _ in range(50):
        clean = _smooth_images(6, 32, gen)
        degraded = torch.cat([_degrade(clean[k:k + 1], k % 3, gen) for k in range(6)])
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

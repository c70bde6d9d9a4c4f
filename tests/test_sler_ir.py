"""SLER-IR: embeddings on the sphere, per-layer top-k routing, GLGF, losses, presets, and
the short version of ``benchmarks/sler_ir_embedding.py`` (learns to tell degradations apart)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from expertir.models import build_model, list_models
from expertir.models.experts import MixtureOfExpertsFFN
from expertir.models.sler_ir_probe import (
    DEGRADATIONS, clean_patches, degrade, mutual_information, run_probe,
)
from expertir.models.sphere_losses import (
    simplex_prototypes, supervised_infonce, triplet_loss, uniformity_loss,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and steady on a busy two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**options):
    torch.manual_seed(0)
    return build_model("sler_ir_tiny", **options).eval()


def test_presets_registered_and_base_is_promptir_sized():
    assert {"sler_ir", "sler_ir_tiny", "sler_ir_small", "sler_ir_base"} <= set(list_models())
    base = build_model("sler_ir_base")
    params = sum(p.numel() for p in base.parameters())
    assert 26e6 <= params <= 36e6


def test_embeddings_on_sphere_and_topk_routing_per_region():
    model = tiny(top_k=2)
    x = torch.rand(2, 3, 64, 48)
    out, aux = model(x, return_aux=True)
    assert out.shape == x.shape
    for key in ("embedding_global", "embedding_local", "routing_embedding"):
        norms = aux[key].norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), key
    assert aux["routing_embedding"].shape == (2, 128, 4, 3)  # one region per 16×16 pixels
    routed = [b for b in model.backbone.blocks() if isinstance(b.ffn, MixtureOfExpertsFFN)]
    assert len(routed) == len(model.backbone.blocks())  # every stage routed by default
    assert set(aux["routing"]) == {b.site.name for b in routed}
    for name, w in aux["routing"].items():
        assert w.shape == (2, 4, 4, 3), name
        assert (w >= 0).all()
        assert torch.allclose(w.sum(1), torch.ones(2, 4, 3), atol=1e-6)
        assert ((w > 0).sum(1) == 2).all()
    # Every layer has its own router (own keys), not a shared one.
    keys = [b.ffn.router.keys for b in routed]
    assert len({id(k) for k in keys}) == len(keys)
    assert not torch.allclose(keys[0], keys[1])


@pytest.mark.parametrize("k", [1, 3])
def test_exactly_k_experts_per_region(k):
    _, aux = tiny(top_k=k)(torch.rand(1, 3, 32, 32), return_aux=True)
    for w in aux["routing"].values():
        assert ((w > 0).sum(1) == k).all()


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (20, 150)])
def test_any_image_size(size):
    model = tiny()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_config_rebuilds_same_model():
    model = tiny(top_k=1, routed_stages=["decoder", "latent"], glgf=False)
    clone = build_model("sler_ir", **model.config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
    stages = {b.site.stage for b in model.backbone.blocks() if isinstance(b.ffn, MixtureOfExpertsFFN)}
    assert stages == {"decoder", "latent"}


def test_bad_options_are_rejected():
    with pytest.raises(ValueError):
        build_model("sler_ir_tiny", routed_stages=["nowhere"])
    with pytest.raises(ValueError):
        build_model("sler_ir_tiny", prototypes="random")
    with pytest.raises(ValueError):
        build_model("sler_ir_tiny", top_k=5)
    with pytest.raises(ValueError):
        build_model("sler_ir_tiny", expert_compute="lazy")
    with pytest.raises(ValueError):
        build_model("sler_ir_tiny", train_patch=100)


def test_label_losses_only_with_labels_and_weighted_inside():
    model = tiny()
    x = torch.rand(3, 3, 32, 32)
    _, aux = model(x, return_aux=True)
    assert set(aux["losses"]) == {"balance"}
    _, aux = model(x, return_aux=True, labels=torch.tensor([0, 3, 4]))
    assert set(aux["losses"]) == {"balance", "contrastive", "triplet", "uniformity"}
    heavier = build_model("sler_ir", **{**model.config, "contrastive_weight": 1.0})
    heavier.load_state_dict(model.state_dict())
    _, aux2 = heavier.eval()(x, return_aux=True, labels=torch.tensor([0, 3, 4]))
    assert torch.allclose(aux2["losses"]["contrastive"], 10 * aux["losses"]["contrastive"])
    total = sum(aux["losses"].values())
    total.backward()
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0
    assert model.prototypes.weight.grad.abs().sum() > 0


def test_ablation_switches():
    x = torch.rand(2, 3, 48, 48)
    _, aux = tiny(sphere=False)(x, return_aux=True)
    assert not torch.allclose(aux["embedding_global"].norm(dim=1), torch.ones(2))
    _, aux = tiny(glgf=False)(x, return_aux=True)
    e = aux["routing_embedding"]  # every region routed by the global token
    assert torch.allclose(e, e[..., :1, :1].expand_as(e))
    assert aux["glgf_gate"] is None
    _, aux = tiny(uniformity=False)(x, return_aux=True, labels=torch.tensor([1, 2]))
    assert "uniformity" not in aux["losses"]
    model = tiny(prototypes="simplex")
    _, aux = model(x, return_aux=True, labels=torch.tensor([1, 2]))
    assert "uniformity" not in aux["losses"]
    assert not list(model.prototypes.parameters())


def test_dense_and_sparse_expert_compute_agree():
    model = tiny(top_k=1)
    dense = build_model("sler_ir", **{**model.config, "expert_compute": "dense"}).eval()
    dense.load_state_dict(model.state_dict())
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), dense(x), atol=1e-5)


def test_balance_loss_keeps_every_expert_alive():
    """Ten steps on a mixed batch: every expert of every layer receives gradient."""
    model = tiny(top_k=1, balance_weight=1.0).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=gen)
    x[:2] *= 0.2  # dark
    x[2:4] = x[2:4] * 0.4 + 0.6  # hazy
    target = x.clamp(0, 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    reached = {}
    for _ in range(10):
        out, aux = model(x, return_aux=True)
        loss = F.l1_loss(out, target) + sum(aux["losses"].values())
        optimiser.zero_grad()
        loss.backward()
        for block in model.backbone.blocks():
            for j, expert in enumerate(block.ffn.experts):
                grad = expert.project_out.weight.grad
                if grad is not None and grad.abs().sum() > 0:
                    reached.setdefault(block.site.name, set()).add(j)
        optimiser.step()
    assert all(reached.get(b.site.name) == set(range(4)) for b in model.backbone.blocks()), reached


def test_sphere_losses_prefer_separated_classes():
    protos = simplex_prototypes(4, 16)
    cos = protos @ protos.T
    assert torch.allclose(cos[~torch.eye(4, dtype=torch.bool)], torch.full((12,), -1 / 3), atol=1e-6)
    labels = torch.arange(4).repeat(3)
    separated = protos[labels] + 0.01 * torch.randn(12, 16)
    separated = F.normalize(separated, dim=1)
    mixed = F.normalize(torch.randn(12, 16), dim=1)
    assert supervised_infonce(separated, labels, protos) < supervised_infonce(mixed, labels, protos)
    assert triplet_loss(separated, labels, protos, margin=0.2) == 0
    assert triplet_loss(mixed, labels, protos, margin=0.2) > 0
    clustered = F.normalize(torch.ones(4, 16) + 0.01 * torch.randn(4, 16), dim=1)
    assert uniformity_loss(protos) < uniformity_loss(clustered)


# --- learns to tell degradations apart (5 generated degradations, 32-px patches) ---

@pytest.fixture(scope="module")
def probe():
    return run_probe(steps=300, size=32, per_class=6, seed=0)


def test_generated_degradations_differ_from_clean():
    gen = torch.Generator().manual_seed(0)
    clean = clean_patches(2, 32, gen)
    for kind in DEGRADATIONS:
        out = degrade(clean, kind, gen)
        assert out.shape == clean.shape and 0 <= out.min() and out.max() <= 1
        assert (out - clean).abs().mean() > 0.01, kind


def test_mutual_information():
    a = torch.tensor([0, 0, 1, 1])
    assert mutual_information(a, a) == pytest.approx(1.0)
    assert mutual_information(a, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0)


def test_embedding_separates_degradations(probe):
    result, curve = probe
    assert curve[-1] < curve[0]
    assert result.accuracy >= 0.95
    # The top-1 expert of every routed layer carries information about the task.
    assert min(result.mutual_information.values()) > 0.5


def test_glgf_routes_each_half_of_a_mixed_image_like_the_half_alone(probe):
    result, _ = probe
    assert result.halves_differ > 0
    assert result.halves_match_alone >= 0.8


def test_routing_weights_cross_fade_between_regions_without_a_seam():
    from expertir.models.experts import upsample_routing

    weights = torch.zeros(1, 2, 2, 2)
    weights[:, 0, :, 0] = 1.0  # left regions: expert 0 only
    weights[:, 1, :, 1] = 1.0  # right regions: expert 1 only
    full = upsample_routing(weights, (32, 32))  # 16-px regions, as at full resolution
    torch.testing.assert_close(full.sum(1), torch.ones(1, 32, 32))
    step = (full[:, 0, :, 1:] - full[:, 0, :, :-1]).abs().max()
    assert step < 0.1  # a hard seam would jump from 1 to 0 between two pixels
    assert full[0, 0, 0, 0] == 1.0 and full[0, 0, 0, -1] == 0.0


def test_routing_smoothing_and_local_margin_keep_uncertain_regions_on_the_global_embedding():
    from expertir.models import build_model

    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    plain = build_model("sler_ir_tiny", train_patch=32).eval()
    guarded = build_model("sler_ir_tiny", train_patch=32, routing_smoothing=3, local_margin=0.5).eval()
    guarded.load_state_dict(plain.state_dict())
    with torch.no_grad():
        _, a = plain(x, return_aux=True)
        _, b = guarded(x, return_aux=True)
    assert b["routing_embedding"].shape == a["routing_embedding"].shape == (1, 128, 4, 6)
    # an untrained encoder is never confident: with a large margin the global token decides
    assert float(b["glgf_gate"].min()) > float(a["glgf_gate"].min())
    assert float(b["glgf_gate"].mean()) > 0.9
    # neighbouring regions differ less after smoothing
    def roughness(e):
        return float((e[..., 1:] - e[..., :-1]).norm(dim=1).mean())
    smooth_only = build_model("sler_ir_tiny", train_patch=32, routing_smoothing=3).eval()
    smooth_only.load_state_dict(plain.state_dict())
    with torch.no_grad():
        _, c = smooth_only(x, return_aux=True)
    assert roughness(c["embedding_local"]) < roughness(a["embedding_local"])
    with pytest.raises(ValueError, match="odd"):
        build_model("sler_ir_tiny", routing_smoothing=2)

"""SLER-IR: embeddings on the sphere, per-layer top-k routing, GLGF, losses, presets, and
the short version of ``benchmarks/sler_ir_embedding.py`` (learns to tell degradations apart).
(Shapes, config and checkpoints: ``test_models.py``.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import load_benchmark, seeded_model
from expertir.models import build_model
from expertir.models.experts import MixtureOfExpertsFFN, upsample_routing
from expertir.models.sphere_losses import (
    simplex_prototypes, supervised_infonce, triplet_loss, uniformity_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")
probe = load_benchmark("sler_ir_embedding")


def tiny(**options):
    return seeded_model("sler_ir_tiny", **options)


def test_base_is_promptir_sized():
    with torch.device("meta"):  # shapes only
        params = sum(p.numel() for p in build_model("sler_ir_base").parameters())
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
    assert not torch.allclose(keys[0], keys[1])


@pytest.mark.parametrize("k", [1, 3])
def test_exactly_k_experts_per_region(k):
    _, aux = tiny(top_k=k)(torch.rand(1, 3, 32, 32), return_aux=True)
    for w in aux["routing"].values():
        assert ((w > 0).sum(1) == k).all()


def test_routed_stages_choose_the_blocks_with_experts():
    model = tiny(routed_stages=["decoder", "latent"])
    stages = {b.site.stage for b in model.backbone.blocks() if isinstance(b.ffn, MixtureOfExpertsFFN)}
    assert stages == {"decoder", "latent"}
    assert set(model.routed) == {b.site.name for b in model.backbone.blocks() if b.site.stage in stages}


@pytest.mark.parametrize("option", [{"routed_stages": ["nowhere"]}, {"prototypes": "random"},
                                    {"top_k": 5}, {"expert_compute": "lazy"}, {"train_patch": 100}])
def test_bad_options_are_rejected(option):
    with pytest.raises(ValueError):
        build_model("sler_ir_tiny", **option)


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


def test_experts_run_dense_under_torch_compile(monkeypatch):
    """The sparse choices have data-dependent sizes that Inductor cannot compile (a
    ``train.compile=true`` run of sler_ir_tiny failed in them): while compiling, the model
    must not reach them."""
    model = tiny(top_k=1).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        want = model(x)

    def sparse(*args, **kwargs):
        raise AssertionError("sparse expert path taken while compiling")

    monkeypatch.setattr(MixtureOfExpertsFFN, "_mixture", sparse)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.no_grad():
        assert torch.allclose(model(x), want, atol=1e-5)


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
def probe_run(one_thread):
    return probe.run_probe(steps=300, size=32, per_kind=6, seed=0)


def test_every_probe_image_shows_its_degradation():
    pool = probe.Pool.generate(16, 32, seed=0)
    assert pool.images.shape == pool.clean.shape == (len(probe.KINDS), 16, 3, 32, 32)
    assert 0 <= pool.images.min() and pool.images.max() <= 1
    change = (pool.images - pool.clean).abs().mean(dim=(2, 3, 4))  # kind × image
    for kind, per_image in zip(probe.KINDS, change):
        assert per_image.min() > 0.01, kind


def test_mutual_information():
    a = torch.tensor([0, 0, 1, 1])
    assert probe.mutual_information(a, a) == pytest.approx(1.0)
    assert probe.mutual_information(a, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0)


def test_embedding_separates_degradations(probe_run):
    result, curve = probe_run
    assert curve[-1] < curve[0]
    assert result.accuracy >= 0.95
    # The top-1 expert of every routed layer carries information about the task.
    assert min(result.mutual_information.values()) > 0.5


def test_glgf_routes_each_half_of_a_mixed_image_like_the_half_alone(probe_run):
    result, _ = probe_run
    assert result.halves_differ > 0
    # Without GLGF (every region routed by the global embedding) this is about 0.45.
    assert result.halves_match_alone >= 0.7


def test_routing_weights_cross_fade_between_regions_without_a_seam():
    weights = torch.zeros(1, 2, 2, 2)
    weights[:, 0, :, 0] = 1.0  # left regions: expert 0 only
    weights[:, 1, :, 1] = 1.0  # right regions: expert 1 only
    full = upsample_routing(weights, (32, 32))  # 16-px regions, as at full resolution
    torch.testing.assert_close(full.sum(1), torch.ones(1, 32, 32))
    step = (full[:, 0, :, 1:] - full[:, 0, :, :-1]).abs().max()
    assert step < 0.1  # a hard seam would jump from 1 to 0 between two pixels
    assert full[0, 0, 0, 0] == 1.0 and full[0, 0, 0, -1] == 0.0


def test_routing_smoothing_and_local_margin_keep_uncertain_regions_on_the_global_embedding():
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


def test_routing_benchmark_measures_inference_time_routing_options(tmp_path, monkeypatch):
    """``benchmarks/sler_ir_routing.py --routing``: the shipped weights once as trained and
    once with every region routed on the global embedding (a huge margin: the GLGF gate is 1)."""
    import json
    import sys

    import numpy as np

    from expertir.imageio import save_rgb

    rng = np.random.default_rng(0)
    clean = np.clip(np.linspace(0, 1, 64)[None, :, None] + 0.05 * rng.standard_normal((64, 64, 3)), 0, 1)
    for rel in ("denoise/McMaster/1.png", "denoise/CBSD68/1.png", "derain/Rain100L/norain/norain-1.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        save_rgb(tmp_path / rel, clean)
    (tmp_path / "derain/Rain100L/rain").mkdir(parents=True)
    save_rgb(tmp_path / "derain/Rain100L/rain/rain-1.png", np.clip(clean + 0.3 * (rng.random((64, 64, 3)) > 0.97), 0, 1))
    routing = load_benchmark("sler_ir_routing")
    monkeypatch.setattr(sys, "argv", ["sler_ir_routing.py", "--data-root", str(tmp_path), "-o", str(tmp_path / "out"),
                                      "--routing", "3:1e9", "--examples", "1"])
    routing.main()
    summary = json.loads((tmp_path / "out/routing.json").read_text())
    assert list(summary) == ["sler_ir_tiny", "sler_ir_tiny (smoothing 3, margin 1e+09)"]
    as_trained, global_only = summary["sler_ir_tiny"], summary["sler_ir_tiny (smoothing 3, margin 1e+09)"]
    assert global_only["clean McMaster"]["gate"] == pytest.approx(1.0)
    assert global_only["clean McMaster"]["disagree_expert"] == 0.0
    assert as_trained["clean McMaster"]["gate"] < 1.0
    assert (tmp_path / "out/routing.png").is_file()


def test_upcycled_experts_copy_the_trained_ones_and_keep_a_top1_model_exact(tmp_path):
    """tools/upcycle_experts.py: every expert is copied, the copies' router keys are the
    originals' (jitter 0) or near them; with top-1 routing the upcycled model is the same
    function (a region's best expert and its copies tie, and all are the same expert)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from expertir.checkpoint import load_model, save_checkpoint

    root = Path(__file__).parents[1]
    model = tiny(num_experts=2, top_k=1).eval()
    save_checkpoint(tmp_path / "two.safetensors", model, "sler_ir_tiny")

    def upcycle(out, *extra):
        return subprocess.run([sys.executable, "tools/upcycle_experts.py", str(tmp_path / "two.safetensors"),
                               "-o", str(tmp_path / out), *extra], capture_output=True, text=True, cwd=root,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)

    assert upcycle("six.safetensors", "--experts", "6", "--jitter", "0").returncode == 0
    six, meta = load_model(tmp_path / "six.safetensors")
    assert meta["config"]["num_experts"] == 6 and meta["upcycled_from"]["num_experts"] == 2
    block = next(iter(six.routed))
    old, new = model.routed[block], six.routed[block]
    for j in range(6):
        for a, b in zip(old.experts[j % 2].parameters(), new.experts[j].parameters()):
            assert torch.equal(a, b)
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(six(x), model(x), rtol=0, atol=1e-6)

    assert upcycle("jittered.safetensors", "--experts", "4").returncode == 0
    keys = F.normalize(load_model(tmp_path / "jittered.safetensors")[0].routed[block].router.keys, dim=1)
    cosine = (keys[2:] * keys[:2]).sum(1)
    assert ((cosine > 0.99) & (cosine < 1)).all()

    bad = upcycle("bad.safetensors", "--experts", "3")
    assert bad.returncode == 2 and "multiple" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    save_checkpoint(tmp_path / "two.safetensors", seeded_model("restormer_tiny"), "restormer_tiny")
    dense = upcycle("dense.safetensors", "--experts", "4")
    assert dense.returncode == 2 and "no experts" in dense.stderr and len(dense.stderr.strip().splitlines()) == 1

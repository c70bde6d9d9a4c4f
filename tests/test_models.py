"""The model contract, checked for every registered model (tiny presets): any input size,
finite output and gradients, ``model.config`` rebuilds the model, safetensors checkpoints
round-trip, and the aux dict keeps one layout."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import seeded_model
from expertir.checkpoint import load_model, save_checkpoint
from expertir.models import build_model, list_models, resolve
from expertir.models.backbone import BACKBONE_PRESETS

TINY = [name for name in list_models() if name.endswith("_tiny")]
FAMILIES = sorted({resolve(name)[0] for name in list_models()})

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_has_every_family_at_every_size_and_rejects_unknown_names():
    assert set(FAMILIES) == {"restormer", "promptir", "sler_ir", "cea"}
    assert set(list_models()) == set(FAMILIES) | {f"{f}_{s}" for f in FAMILIES for s in BACKBONE_PRESETS}
    for family in FAMILIES:
        for size in BACKBONE_PRESETS:
            preset_family, options = resolve(f"{family}_{size}")
            assert preset_family == family and options["size"] == size
    with pytest.raises(ValueError, match="unknown model"):
        build_model("no_such_model")


@pytest.mark.parametrize("name", TINY)
def test_unknown_option_is_rejected(name):
    with pytest.raises(ValueError, match="unknown backbone option"):
        build_model(name, widht=3)


@pytest.mark.parametrize("hw", [(1, 1), (37, 53), (16, 40)])
@pytest.mark.parametrize("name", TINY)
def test_any_input_size_gives_a_finite_output_of_that_size(name, hw):
    model = seeded_model(name)
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", TINY)
def test_gradients_are_finite_and_reach_both_ends_of_the_network(name):
    model = seeded_model(name).train()
    x = torch.rand(2, 3, 24, 40)
    out, aux = model(x, return_aux=True, labels=torch.tensor([0, 3]))
    loss = F.l1_loss(out, x.flip(-1)) + sum(aux["losses"].values(), torch.zeros(()))
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    for first_and_last in ("backbone.patch_embed.proj.weight", "backbone.output.weight"):
        assert grads[first_and_last].abs().sum() > 0, first_and_last


@pytest.mark.parametrize("name", TINY)
def test_config_is_plain_json_and_rebuilds_the_model(name):
    # A backbone override given as a tuple: flattened into the config, stored as a list.
    model = build_model(name, dim=8, num_blocks=(1, 1, 1, 1))
    config = model.config
    assert json.loads(json.dumps(config)) == config
    assert config["size"] == "tiny" and config["dim"] == 8 and config["num_blocks"] == [1, 1, 1, 1]
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for rebuild_as in (name, resolve(name)[0]):  # the preset or its family
        rebuilt = build_model(rebuild_as, **config)
        assert rebuilt.config == config
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


@pytest.mark.parametrize("name", TINY)
def test_safetensors_checkpoint_round_trip(name, tmp_path):
    model = seeded_model(name)
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model, name, {"steps": 7})
    loaded, meta = load_model(path)
    assert meta["model"] == name and meta["steps"] == 7 and meta["config"] == model.config
    assert loaded.config == model.config and not loaded.training
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in loaded.state_dict().items())
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("name", TINY)
def test_aux_layout(name):
    """``(out, aux)``: the same output; ``aux["losses"]`` maps names to finite scalars that
    carry gradient; every other entry is detached and batch-first (a tensor, None, or a
    dict of them by block or level)."""
    model = seeded_model(name)
    x = torch.rand(2, 3, 32, 48)
    out, aux = model(x, return_aux=True)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))
    assert isinstance(aux["losses"], dict)
    for key, value in aux["losses"].items():
        assert value.shape == () and torch.isfinite(value) and value.requires_grad, key
    sites = {b.site.name for b in model.backbone.blocks()}
    for key, value in aux.items():
        if key == "losses" or value is None:
            continue
        tensors = value.values() if isinstance(value, dict) else [value]
        for t in tensors:
            assert isinstance(t, torch.Tensor) and t.shape[0] == 2 and not t.requires_grad, key
        if key == "routing":  # block name -> per-position weights, B×k×h×w
            assert value and set(value) <= sites
            assert all(t.dim() == 4 for t in value.values())

import pytest
import torch

from expertir.checkpoint import load_model, read_metadata, save_checkpoint
from expertir.errors import CheckpointError
from expertir.models import build_model


def test_round_trip_restores_weights_and_metadata(tmp_path):
    model = build_model("restormer_tiny", dim=8)
    path = save_checkpoint(tmp_path / "m.safetensors", model, "restormer_tiny", {"steps": 3})
    loaded, meta = load_model(path)
    assert meta["model"] == "restormer_tiny" and meta["steps"] == 3 and meta["config"]["dim"] == 8
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert read_metadata(path)["config"] == model.config


def test_mismatched_checkpoint_says_what_differs(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model("restormer_tiny", dim=8), "restormer_tiny")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(path, name="restormer_tiny", dim=16)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")


def test_foreign_pth_loads_only_plain_tensors(tmp_path):
    model = build_model("restormer_tiny", dim=8)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pth")
    loaded, _ = load_model(tmp_path / "w.pth", name="restormer_tiny", dim=8)
    assert torch.equal(loaded.state_dict()["backbone.output.weight"], model.state_dict()["backbone.output.weight"])

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(tmp_path / "evil.pth", name="restormer_tiny", dim=8)


def test_atomic_write_keeps_the_old_file_on_failure_and_normal_permissions(tmp_path):
    import os

    from expertir.atomic import atomic_path

    target = tmp_path / "w.bin"
    old_mask = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            open(tmp, "wb").write(b"old")
        assert target.read_bytes() == b"old" and (target.stat().st_mode & 0o777) == 0o644
        with pytest.raises(RuntimeError), atomic_path(target) as tmp:
            open(tmp, "wb").write(b"partial")
            raise RuntimeError("killed mid-write")
    finally:
        os.umask(old_mask)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]  # no temporary left behind


def test_load_pretrained_finds_shipped_weights_file_and_random(tmp_path):
    import pytest
    from expertir.errors import ExpertirError
    from expertir.models import build_model
    from expertir.weights import list_shipped, load_pretrained

    shipped = list_shipped()[0]
    loaded = load_pretrained(shipped.stem)
    assert loaded.path == shipped and not loaded.model.training
    path = save_checkpoint(tmp_path / "m.safetensors", build_model("restormer_tiny"), "restormer_tiny")
    assert load_pretrained(weights=path).name == "restormer_tiny"
    assert load_pretrained("promptir_tiny", untrained=True).path is None
    with pytest.raises(ExpertirError, match="no shipped weights"):
        load_pretrained("promptir_tiny")
    with pytest.raises(ExpertirError, match="unknown model"):
        load_pretrained("nope")

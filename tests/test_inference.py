import numpy as np
import pytest
import torch
import torch.nn as nn

from expertir.inference import restore, tile_starts, tile_window
from expertir.metrics import psnr
from expertir.models import build_model

from conftest import smooth_image


class LocalNet(nn.Module):
    """Three 3x3 convolutions: receptive radius 3, far below overlap // 4."""

    size_multiple = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                 nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return torch.sigmoid(self.net(x))


@pytest.mark.parametrize("hw", [(200, 300), (131, 77), (64, 64)])
def test_tiled_equals_untiled_for_a_local_model(hw):
    torch.manual_seed(0)
    model, img = LocalNet(), np.random.default_rng(0).random((*hw, 3), dtype=np.float32)
    whole = restore(model, img, device="cpu")
    tiled = restore(model, img, tile=64, overlap=32, device="cpu", tile_batch=3)
    assert whole.shape == img.shape
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)  # float rounding of the blend only


def test_tiled_transformer_is_close_to_untiled():
    """MDTA attends over all pixels of a tile, so tiles differ slightly; stated tolerance
    at tile 64 / overlap 32 on a smooth image: PSNR(tiled, whole) > 40 dB, max |diff| < 0.05."""
    torch.manual_seed(0)
    model, img = build_model("restormer_tiny"), smooth_image(160, 224)
    whole = restore(model, img, device="cpu")
    tiled = restore(model, img, tile=64, overlap=32, device="cpu")
    assert psnr(tiled, whole, crop=1) > 40
    assert np.abs(tiled - whole).max() < 0.05


def test_window_blends_to_one_and_grid_covers():
    assert tile_starts(300, 64, 32) == [0, 32, 64, 96, 128, 160, 192, 224, 236]
    assert tile_starts(50, 64, 32) == [0]
    h = 300
    total = torch.zeros(h)
    for s in tile_starts(h, 64, 32):
        total[s:s + 64] += tile_window(64, 1, 32, s > 0, s + 64 < h, False, False)[:, 0]
    assert (total > 0.99).all()  # every pixel fully covered, no seam dips
    w = tile_window(64, 64, 32, True, True, True, True)
    assert w[:8].sum() == 0 and w[32, 32] == 1


def test_restore_keeps_odd_sizes_and_tensor_type():
    model = build_model("restormer_tiny")
    out = restore(model, torch.rand(2, 3, 37, 53), device="cpu")
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 37, 53)
    assert restore(model, np.zeros((1, 1, 3), np.float32), device="cpu").shape == (1, 1, 3)


# ---------------------------------------------------------------- memory budget and plans

from expertir.errors import ExpertirError  # noqa: E402
from expertir.inference import format_size, memory_profile, parse_size, plan_restore  # noqa: E402
from expertir.inference import memory as memory_module  # noqa: E402
from expertir.inference.plan import MAX_TILE  # noqa: E402

#: Memory is measured through /proc (Linux); elsewhere plans fall back to fixed tiles.
measurable = pytest.mark.skipif(not memory_module.can_measure("cpu"),
                                reason="peak memory cannot be measured on this system")


class WideNet(nn.Module):
    """1×1 convolutions through ``ch`` channels: at least 2 × ch × 4 bytes live per pixel."""

    size_multiple = 8

    def __init__(self, ch=256):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, ch, 1), nn.Conv2d(ch, 3, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@measurable
def test_memory_per_pixel_is_measured_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPERTIR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(memory_module, "_MEMO", {})
    said = []
    profile = memory_profile(WideNet(256), "cpu", on_measure=said.append)
    assert said and "measuring" in said[0]
    # conv output and ReLU output, 256 float32 channels each: ~2 kB per pixel
    assert 0.5 * 2048 < profile.bytes_per_pixel < 2 * 2048
    assert profile.peaks[1] > profile.peaks[0] > 0 and profile.method == "rss"
    assert profile.need(256 * 256) >= max(profile.peaks)  # never below a measured peak
    # cached: in this process and in the file; refresh measures again
    assert memory_profile(WideNet(256), "cpu", on_measure=said.append) is profile and len(said) == 1
    monkeypatch.setattr(memory_module, "_MEMO", {})
    assert memory_profile(WideNet(256), "cpu", on_measure=said.append) == profile and len(said) == 1
    assert len(__import__("json").loads((tmp_path / "memory.json").read_text())) == 1
    memory_profile(WideNet(256), "cpu", refresh=True, on_measure=said.append)
    assert len(said) == 2
    memory_profile(WideNet(64), "cpu", on_measure=said.append)  # another architecture
    assert len(said) == 3


@measurable
def test_registered_models_are_measured_in_a_child_process():
    model = build_model("restormer_tiny")
    spec = memory_module._rebuild_spec(model)
    assert spec["qualname"] == "Restormer" and memory_module._rebuild_spec(LocalNet()) is None
    peaks = memory_module._peaks_in_child(spec, (64, 128))
    assert peaks is not None and peaks[1] > peaks[0] > 0


def test_sizes_parse_and_print():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5 GiB") == 3 * 2**29
    assert parse_size("800MB") == 8 * 10**8 and parse_size("64k") == 64000
    for bad in ("lots", "-1GB", "0", "2 parsecs"):
        with pytest.raises(ExpertirError, match="memory size"):
            parse_size(bad)
    assert format_size(1.5e9) == "1.5 GB" and format_size(3.2e8) == "320 MB"


@measurable
def test_tiny_budget_tiles_and_agrees_with_whole_image():
    """Same model and tolerance as test_tiled_transformer_is_close_to_untiled."""
    torch.manual_seed(0)
    model, img = build_model("restormer_tiny"), smooth_image(160, 224)
    whole_plan = plan_restore(model, 160, 224, torch.device("cpu"), tile=None)
    assert whole_plan.whole and whole_plan.need > 0
    plans = []
    budget = int(whole_plan.need * 0.6)
    tiled = restore(model, img, device="cpu", max_memory=budget, on_plan=plans.append)
    (plan,) = plans
    assert not plan.whole and plan.tiles > 1 and plan.need <= budget and plan.budget == budget
    assert str(plan).startswith(f"tiled {plan.tiles} × ")
    whole = restore(model, img, device="cpu", tile=0)
    assert psnr(tiled, whole, crop=1) > 40
    assert np.abs(tiled - whole).max() < 0.05
    huge = plan_restore(model, 160, 224, torch.device("cpu"), max_memory=10**15)
    assert huge.whole and str(huge).startswith("whole image")
    assert "capped" in huge.reason  # never more than the machine has


@measurable
def test_budget_too_small_for_any_tile_is_a_clear_error():
    with pytest.raises(ExpertirError, match="needs at least .* the budget is"):
        plan_restore(build_model("restormer_tiny"), 2000, 3000, torch.device("cpu"), max_memory=10**6)


@measurable
def test_batches_grow_with_the_budget_within_one_row_of_tiles():
    """A local model on a 16-MP image: tiles stop at MAX_TILE² pixels, and a bigger budget
    buys bigger batches (planned only, nothing runs)."""
    model, cpu = LocalNet(), torch.device("cpu")
    whole = plan_restore(model, 2048, 8192, cpu, tile=None).need
    fractions = (0.3, 0.6, 0.95)
    plans = [plan_restore(model, 2048, 8192, cpu, max_memory=int(whole * f)) for f in fractions]
    for plan, f in zip(plans, fractions):
        assert not plan.whole and plan.need <= whole * f
        assert plan.tile[0] * plan.tile[1] <= MAX_TILE ** 2
        assert plan.batch <= len(tile_starts(8192, plan.tile[1], 32))  # one row of tiles at most
    batches = [p.batch for p in plans]
    assert batches == sorted(batches) and batches[-1] > 1


@measurable
def test_tiles_follow_the_image_shape():
    """1200×800 with room for ~1/3 of it per tile: one row of three 800×424 tiles (6% more
    pixels than the image), not 664-px squares (84% more)."""
    model, cpu = build_model("restormer_tiny"), torch.device("cpu")
    whole = plan_restore(model, 800, 1200, cpu, tile=None).need
    plan = plan_restore(model, 800, 1200, cpu, max_memory=int(whole * 0.4))
    rows, cols = tile_starts(800, plan.tile[0], 32), tile_starts(1200, plan.tile[1], 32)
    assert len(rows) * len(cols) == plan.tiles
    assert plan.tiles * plan.tile[0] * plan.tile[1] < 1.2 * 800 * 1200


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_streamed_blend_equals_whole_image_for_any_batch(batch):
    torch.manual_seed(0)
    model, img = LocalNet(), np.random.default_rng(1).random((203, 341, 3), dtype=np.float32)
    whole = restore(model, img, tile=0, device="cpu")
    tiled = restore(model, img, tile=72, overlap=32, tile_batch=batch, device="cpu")
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


class HungryNet(LocalNet):
    """LocalNet that cannot allocate what a forward over ``fail_at`` (H, W) or more needs:
    it asks the real allocator for 2^62 bytes there."""

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at = fail_at

    def forward(self, x):
        if x.shape[-2] >= self.fail_at[0] and x.shape[-1] >= self.fail_at[1]:
            torch.empty(1 << 62, dtype=torch.uint8)
        return super().forward(x)


def test_out_of_memory_in_a_forced_whole_image_is_retried_tiled():
    torch.manual_seed(0)
    model, img = HungryNet(fail_at=(200, 304)), smooth_image(200, 300)
    plans = []
    out = restore(model, img, tile=0, device="cpu", on_plan=plans.append)
    assert [p.whole for p in plans] == [True, False]
    assert "ran out of memory, retried tiled" in str(plans[1])
    reference = LocalNet()
    reference.load_state_dict({k: v for k, v in model.state_dict().items()})
    np.testing.assert_allclose(out, restore(reference, img, tile=0, device="cpu"), rtol=0, atol=1e-6)
    with pytest.raises(ExpertirError, match="out of memory") as exc:
        restore(HungryNet(fail_at=(8, 8)), img, tile=0, device="cpu")
    assert "\n" not in str(exc.value)


@measurable
def test_efficiency_table_prints_the_measured_memory_per_pixel():
    from expertir.evaluation.efficiency import efficiency_markdown, measure

    row = measure("restormer_tiny", size=16, runs=1, warmup=0, gpu=False)
    expected = memory_profile(build_model("restormer_tiny"), "cpu").bytes_per_pixel
    assert row.cpu_bytes_per_px == expected > 0
    table = efficiency_markdown([row], 16, "setting")
    assert "CPU memory (kB/px)" in table.splitlines()[0]
    assert f"| {expected / 1000:.2f} |" in table


@measurable
def test_planning_leaves_the_process_peak_memory_record_alone():
    """``/usr/bin/time`` reports the kernel's peak RSS record: measuring a registered model
    (in a child process) and planning must not reset it in this process."""
    def peak():
        return memory_module._proc_status("VmHWM")

    model = build_model("restormer_tiny")
    memory_profile(model, "cpu")  # measured now or cached: either way not in this process
    np.ones(300 * 2**20 // 8)  # raise this process's peak by ~300 MB, then free it
    before = peak()
    plan_restore(model, 3000, 4000, torch.device("cpu"))
    restore(model, np.zeros((8, 8, 3), np.float32), device="cpu")
    assert peak() >= before


def _views(img: np.ndarray) -> list:
    """The image's eight flips and transposes in restore's order, each with its inverse."""
    out = []
    for k in range(8):
        def fwd(a, k=k):
            a = a.transpose(1, 0, 2) if k & 4 else a
            a = a[:, ::-1] if k & 1 else a
            return a[::-1] if k & 2 else a

        def back(a, k=k):
            a = a[::-1] if k & 2 else a
            a = a[:, ::-1] if k & 1 else a
            return a.transpose(1, 0, 2) if k & 4 else a
        out.append((fwd, back))
    return out


@pytest.mark.parametrize("n", [2, 4, 8])
def test_self_ensemble_averages_the_views_mapped_back(n):
    torch.manual_seed(0)
    model, img = LocalNet(), np.random.default_rng(1).random((131, 77, 3), dtype=np.float32)
    by_hand = np.mean([back(restore(model, np.ascontiguousarray(fwd(img)), device="cpu",
                                    exposure_guard=False))
                       for fwd, back in _views(img)[:n]], axis=0)
    whole = restore(model, img, device="cpu", exposure_guard=False, self_ensemble=n)
    tiled = restore(model, img, tile=64, overlap=32, device="cpu", exposure_guard=False,
                    self_ensemble=n)
    assert not np.allclose(whole, restore(model, img, device="cpu", exposure_guard=False), atol=1e-3)
    np.testing.assert_allclose(whole, by_hand, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tiled, by_hand, rtol=0, atol=1e-6)


def test_self_ensemble_size_is_checked():
    with pytest.raises(ExpertirError, match="self_ensemble"):
        restore(LocalNet(), np.zeros((16, 16, 3), np.float32), device="cpu", self_ensemble=3)


def test_a_gray_input_gets_a_gray_output_and_a_colour_one_is_left_as_is():
    torch.manual_seed(0)
    model = LocalNet()
    plane = np.random.default_rng(2).random((40, 56, 1), dtype=np.float32)
    gray = np.repeat(plane, 3, axis=2)
    out = restore(model, gray, device="cpu", exposure_guard=False)
    with torch.no_grad():
        raw = model(torch.from_numpy(gray).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.ptp(raw, axis=2).max() > 1e-3  # the network alone does not keep it gray
    np.testing.assert_allclose(out, np.repeat(raw.mean(axis=2, keepdims=True), 3, axis=2), atol=1e-6)
    colour = gray.copy()
    colour[..., 0] += 0.01
    out = restore(model, colour, device="cpu", exposure_guard=False)
    assert np.ptp(out, axis=2).max() > 1e-3

"""Training data: task balance, dihedral augmentation, deterministic loaders, real-data search."""

from collections import Counter

import numpy as np
import pytest
import torch

from expertir.data.tasks import TASK_IDS
from expertir.data.train import (PairSource, SynthSource, TrainDataset, balanced_labels,
                                 build_train_dataset, dihedral)
from expertir.errors import ExpertirError
from expertir.imageio import save_rgb


def _clean(n=3, size=48):
    rng = np.random.default_rng(0)
    return [rng.uniform(0, 1, (size, size + 8, 3)).astype(np.float32) for _ in range(n)]


def test_task_balance_over_10k_samples():
    ratios = {"denoise_25": 0.5, "derain": 0.3, "dehaze": 0.2}
    ds = TrainDataset({t: _clean() for t in ratios}, ratios, patch_size=32, length=10_000, seed=3)
    counts = Counter(TASK_IDS[i] for i in ds.task_schedule())
    for task, r in ratios.items():
        assert abs(counts[task] / 10_000 - r) <= 0.02 * r
    first = ds.task_schedule().copy()
    ds.set_epoch(1)
    assert not np.array_equal(first, ds.task_schedule())  # re-shuffled per epoch
    for i in (0, 1, 9_999):  # the items carry the scheduled task
        assert ds[i]["task"] == ds.task_schedule()[i]


def test_balanced_labels_rounds_exactly():
    labels = balanced_labels({"a": 1, "b": 1, "c": 1}, 10)
    assert len(labels) == 10 and sorted(Counter(labels).values()) == [3, 3, 4]


def test_dihedral_gives_eight_distinct_transforms_including_identity():
    a = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    outs = [dihedral(a, k) for k in range(8)]
    assert np.array_equal(outs[0], a)
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8


def test_items_are_paired_crops_with_labels():
    clean = _clean(2)
    pairs = [(c * 0.5, c) for c in clean]  # degraded = clean darkened, known relation
    ds = TrainDataset({"lowlight": PairSource(pairs), "denoise_50": clean}, patch_size=32, length=20)
    for i in range(20):
        item = ds[i]
        assert item["degraded"].shape == item["clean"].shape == (3, 32, 32)
        if TASK_IDS[item["task"]] == "lowlight":
            torch.testing.assert_close(item["degraded"], item["clean"] * 0.5)
        else:
            assert 0.1 < float((item["degraded"] - item["clean"]).abs().mean()) < 0.3


def test_build_train_dataset_never_uses_test_sets(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        save_rgb(tmp_path / "denoise/BSD400" / f"{i}.png", rng.uniform(0, 1, (40, 40)))
        save_rgb(tmp_path / "denoise/CBSD68" / f"{i}.png", rng.uniform(0, 1, (40, 40, 3)))
    save_rgb(tmp_path / "derain/Rain100L-sub1/rain/rain-1.png", rng.uniform(0, 1, (40, 40, 3)))
    save_rgb(tmp_path / "derain/Rain100L-sub1/norain/norain-1.png", rng.uniform(0, 1, (40, 40, 3)))
    save_rgb(tmp_path / "dehaze/ITS-train/hazy/1_0.9_0.1.png", rng.uniform(0, 1, (40, 40, 3)))
    save_rgb(tmp_path / "dehaze/ITS-train/gt/1.png", rng.uniform(0, 1, (40, 40, 3)))
    data = build_train_dataset(tmp_path, ["denoise_25", "derain", "dehaze"], patch_size=32, length=8)
    ds = data.dataset
    assert len(ds.sources["denoise_25"]) == 3
    assert all("BSD400" in str(p) for p in ds.sources["denoise_25"].images)
    assert all("BSD400" in str(p) for p in ds.sources["derain"].images)  # synthesised
    assert isinstance(ds.sources["dehaze"], PairSource)
    assert any("synthesised" in line for line in data.report)
    assert any("CBSD68" in line and "refused" not in line for line in data.report) is False
    assert ds[0]["degraded"].shape == (3, 32, 32)
    with pytest.raises(ExpertirError, match="no clean training images"):
        (tmp_path / "empty").mkdir()
        build_train_dataset(tmp_path / "empty", ["derain"])


def _gray(rng, size=40):
    return rng.uniform(0, 1, (size, size))


def _colour(rng, size=40):
    return rng.uniform(0, 1, (size, size + 4, 3))


def _data_root(tmp_path, rng, gray=20, colour=10):
    for i in range(gray):  # gray training images, like BSD400
        save_rgb(tmp_path / "denoise/BSD400" / f"{i}.png", _gray(rng))
    for i in range(colour):
        save_rgb(tmp_path / "clean/Photos" / f"{i}.png", _colour(rng))
    return tmp_path


def test_colour_share_sets_how_often_colour_images_are_drawn_and_gray_keeps_gray_noise(tmp_path):
    from expertir.data.degradations import is_gray

    root = _data_root(tmp_path, np.random.default_rng(2))
    data = build_train_dataset(root, ["denoise_25", "derain"], patch_size=32, length=2000,
                               colour_share={"default": 1.0, "denoise_25": 0.4}, val_images=2)
    src = data.dataset.sources["denoise_25"]
    assert len(src.weights) == len(src.images) == 26  # 2 of each kind held out
    items = [data.dataset[i] for i in range(2000)]
    colour = {t: [not is_gray(it["degraded"].permute(1, 2, 0).numpy()) for it in items
                  if TASK_IDS[it["task"]] == t] for t in ("denoise_25", "derain")}
    assert abs(np.mean(colour["denoise_25"]) - 0.4) < 0.05  # gray images got gray noise
    assert np.mean(colour["derain"]) == 1.0
    assert set(data.validation) == {"denoise_25", "derain"}
    assert data.validation["derain"]["clean"].shape[0] == 2
    with pytest.raises(ExpertirError, match="colour_share"):
        build_train_dataset(root, ["denoise_25"], patch_size=32, colour_share=1.5)


def test_clean_task_target_is_its_input(tmp_path):
    root = _data_root(tmp_path, np.random.default_rng(3), gray=3, colour=3)
    data = build_train_dataset(root, ["clean", "dehaze"], patch_size=32, length=40)
    for i in range(40):
        item = data.dataset[i]
        same = torch.equal(item["degraded"], item["clean"])
        assert same == (TASK_IDS[item["task"]] == "clean")


def test_dark_scenes_darken_a_share_of_clean_samples_target_included(tmp_path):
    root = _data_root(tmp_path, np.random.default_rng(3), gray=3, colour=3)
    plain = build_train_dataset(root, ["clean"], patch_size=32, length=400)
    dark = build_train_dataset(root, ["clean"], patch_size=32, length=400, dark_scene_share=0.5)
    darker = 0
    for i in range(400):
        a, b = plain.dataset[i], dark.dataset[i]
        assert torch.equal(b["degraded"], b["clean"])  # still left alone
        if not torch.equal(a["clean"], b["clean"]):
            darker += 1
            assert float(b["clean"].mean()) < float(a["clean"].mean())
    assert 150 < darker < 250  # about half
    assert "50% of them dark scenes" in " ".join(dark.report)


def test_several_roots_streak_layers_and_real_low_light_pairs(tmp_path):
    rng = np.random.default_rng(4)
    shared = _data_root(tmp_path / "shared", rng, gray=3, colour=3)
    for i in range(4):
        streaks = np.zeros((80, 90))
        streaks[:, 10 + 15 * i::30] = 0.9  # vertical bright lines on black
        save_rgb(shared / "rain-streaks/Layers" / f"{i}.png", streaks)
    (shared / "rain-streaks/Layers/broken.png").write_bytes(b"not a png")
    (shared / "clean/Empty").mkdir()
    local = tmp_path / "local"
    for i in range(5):
        high = _colour(rng)
        save_rgb(local / "lowlight/LOLv1-train/high" / f"{i}.png", high)
        save_rgb(local / "lowlight/LOLv1-train/low" / f"{i}.png", high * 0.1)
    save_rgb(local / "lowlight/LOLv1-train/high/odd.png", _colour(rng, 30))  # sizes differ
    save_rgb(local / "lowlight/LOLv1-train/low/odd.png", _colour(rng, 40))
    data = build_train_dataset([shared, local], ["derain", "lowlight"], patch_size=32, length=20,
                               val_images=1)
    report = "\n".join(data.report)
    assert "4 real streak layers" in report and "broken.png" in report
    assert "Empty: empty folder" in report
    assert "5 pairs from" in report and "odd.png: size 44×40 differs from its target" in report
    assert isinstance(data.dataset.sources["lowlight"], PairSource)
    assert len(data.dataset.sources["lowlight"]) == 4  # one pair held out for validation
    for i in range(20):
        item = data.dataset[i]
        if TASK_IDS[item["task"]] == "derain":  # streaks brighten on the whole
            assert float(item["degraded"].mean()) > float(item["clean"].mean())
    procedural = build_train_dataset([shared, local], ["derain"], patch_size=32, length=4, rain="procedural")
    assert "procedural streaks" in "\n".join(procedural.report)
    with pytest.raises(ExpertirError, match="rain-streak layers"):
        build_train_dataset([local, _data_root(tmp_path / "bare", rng, 2, 2)], ["derain"], rain="layers")


def test_a_mismatched_training_pair_is_named_in_one_line(tmp_path):
    pairs = [(np.zeros((40, 40, 3), np.float32), np.zeros((40, 44, 3), np.float32))]
    ds = TrainDataset({"lowlight": PairSource(pairs)}, patch_size=32, length=2)
    with pytest.raises(ExpertirError, match="training pair sizes differ"):
        ds[0]


def test_synthesis_context_degrades_a_larger_crop_and_keeps_its_centre():
    """A synthesised degradation sees the image around the patch (a blur near the patch
    border mixes in real neighbours, not reflected ones); the patch is the context's centre
    and stays aligned with its target."""
    image = np.random.default_rng(3).random((96, 96, 3)).astype(np.float32)
    seen = []

    def record(img, seed):
        seen.append(img.copy())
        return img * 0.5

    source = SynthSource([image], record, "one random image")
    for context, size in ((0, 32), (16, 32), (64, 64)):
        seen.clear()
        item = TrainDataset({"deblur": source}, patch_size=32, length=4, synth_context=context)[1]
        assert [s.shape for s in seen] == [(size, size, 3)]
        assert item["degraded"].shape == item["clean"].shape == (3, 32, 32)
        top = (size - 32) // 2
        centre = torch.from_numpy(seen[0][top:top + 32, top:top + 32].transpose(2, 0, 1).copy())
        torch.testing.assert_close(item["clean"], centre)
        torch.testing.assert_close(item["degraded"], item["clean"] * 0.5)

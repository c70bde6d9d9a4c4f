"""Training data: task balance, dihedral augmentation, deterministic loaders, real-data search."""

from collections import Counter

import numpy as np
import pytest
import torch

from expertir.data.tasks import TASK_IDS
from expertir.data.train import (PairSource, TrainDataset, balanced_labels, build_train_dataset,
                                 dihedral, make_train_loader)
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


def test_loader_with_two_workers_is_reproducible():
    sources = {"denoise_15": _clean(), "derain": _clean(), "deblur": _clean()}

    def batches(seed, workers):
        ds = TrainDataset(sources, patch_size=32, length=16, seed=seed)
        loader = make_train_loader(ds, batch_size=4, num_workers=workers, seed=seed)
        loader.set_epoch(2)
        return [b for b in loader]

    a, b = batches(5, 2), batches(5, 2)
    assert len(a) == 4
    for x, y in zip(a, b):
        assert torch.equal(x["degraded"], y["degraded"]) and torch.equal(x["task"], y["task"])
    c = batches(5, 0)  # same batches without workers
    assert all(torch.equal(x["degraded"], y["degraded"]) for x, y in zip(a, c))
    d = batches(6, 2)
    assert not all(torch.equal(x["clean"], y["clean"]) for x, y in zip(a, d))


def test_build_train_dataset_never_uses_test_sets(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for i in range(3):
        save_rgb(tmp_path / "denoise/BSD400" / f"{i}.png", rng.uniform(0, 1, (40, 40)))
        save_rgb(tmp_path / "denoise/CBSD68" / f"{i}.png", rng.uniform(0, 1, (40, 40, 3)))
    save_rgb(tmp_path / "derain/Rain100L-sub1/rain/rain-1.png", rng.uniform(0, 1, (40, 40, 3)))
    save_rgb(tmp_path / "derain/Rain100L-sub1/norain/norain-1.png", rng.uniform(0, 1, (40, 40, 3)))
    save_rgb(tmp_path / "dehaze/ITS-train/hazy/1_0.9_0.1.png", rng.uniform(0, 1, (40, 40, 3)))
    save_rgb(tmp_path / "dehaze/ITS-train/gt/1.png", rng.uniform(0, 1, (40, 40, 3)))
    ds = build_train_dataset(tmp_path, ["denoise_25", "derain", "dehaze"], patch_size=32,
                             length=8, use_skimage_photos=False)
    assert len(ds.sources["denoise_25"]) == 3
    assert all("BSD400" in str(p) for p in ds.sources["denoise_25"].images)
    assert all("BSD400" in str(p) for p in ds.sources["derain"].images)  # synthesised
    assert isinstance(ds.sources["dehaze"], PairSource)
    assert "synthesised" in capsys.readouterr().out
    assert ds[0]["degraded"].shape == (3, 32, 32)
    with pytest.raises(ExpertirError, match="no clean training images"):
        build_train_dataset(tmp_path / "empty", ["derain"], use_skimage_photos=False)


def test_photo_share_sets_how_often_the_colour_photos_are_drawn(tmp_path):
    from expertir.data.degradations import is_gray
    from expertir.training.data import hold_out

    rng = np.random.default_rng(2)
    for i in range(20):  # gray training images, like BSD400
        save_rgb(tmp_path / "denoise/BSD400" / f"{i}.png", rng.uniform(0, 1, (40, 40)))
    ds = build_train_dataset(tmp_path, ["denoise_25"], patch_size=32, length=2000, photo_share=0.4)
    src = ds.sources["denoise_25"]
    assert len(src.weights) == len(src.images) == 25
    colour = [not is_gray(ds[i]["degraded"].permute(1, 2, 0).numpy()) for i in range(2000)]
    assert abs(np.mean(colour) - 0.4) < 0.04  # gray images got gray noise, photos colour noise
    hold_out(ds, 5, 32)
    assert len(src.weights) == len(src.images) == 20
    with pytest.raises(ExpertirError, match="photo_share"):
        build_train_dataset(tmp_path, ["denoise_25"], patch_size=32, photo_share=1.5)


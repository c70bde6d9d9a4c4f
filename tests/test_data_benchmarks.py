"""Benchmark readers on temporary PromptIR, MoCE-IR, by-task and paired layouts."""

from pathlib import Path

import numpy as np
import pytest

from expertir.data import load_benchmark
from expertir.data.layouts import name_key, pair_by_name
from expertir.errors import ExpertirError
from expertir.imageio import save_rgb


def _img(seed, h=40, w=36, gray=False):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.2, 0.8, (h, w, 1 if gray else 3)).astype(np.float32)
    return img[..., 0] if gray else img


def _write(path: Path, seed=0, **kw):
    save_rgb(path, _img(seed, **kw))
    return path


def _promptir(root: Path) -> Path:
    for i in range(3):
        _write(root / "test/denoise/bsd68" / f"{i}.png", i)
    for i in (1, 2):
        _write(root / "test/derain/Rain100L/input" / f"rain-{i}.png", 10 + i)
        _write(root / "test/derain/Rain100L/target" / f"norain-{i}.png", 20 + i)
    _write(root / "test/derain/Rain100L/input/rain-3.png", 13)  # no target
    _write(root / "test/dehaze/input/0001_0.8_0.2.jpg", 30)
    _write(root / "test/dehaze/target/0001.png", 31)
    return root


def _moce(root: Path) -> Path:
    _write(root / "denoising/cBSD68/original_png/a.png", 1)
    _write(root / "deraining/Rain100L/rainy/rain-001.png", 2)
    _write(root / "deraining/Rain100L/gt/norain-001.png", 3)
    _write(root / "dehazing/SOTS/outdoor/hazy/0007_0.9_0.16.jpg", 4)
    _write(root / "dehazing/SOTS/outdoor/gt/0007.png", 5)
    for sub in ("deblurring/GoPro/test", "llie/LOLv1/Test"):
        _write(root / sub / "input/x.png", 6)
        _write(root / sub / "target/x.png", 7)
    return root


def test_name_pairing_accepts_the_benchmark_namings():
    assert name_key("rain-001") == name_key("norain-1") == "1"
    assert name_key("pic_rainy") == name_key("pic_gt") == "pic"
    res = pair_by_name([Path("0001_0.8_0.2.jpg"), Path("0001_0.9_0.1.jpg"), Path("9_1_1.jpg")],
                       [Path("0001.png"), Path("0002.png")])
    assert [t.name for _, t in res.pairs] == ["0001.png", "0001.png"]
    assert [p.name for p in res.unmatched_inputs] == ["9_1_1.jpg"]
    assert [p.name for p in res.unmatched_targets] == ["0002.png"]


def test_promptir_layout_three_task(tmp_path):
    root = _promptir(tmp_path)
    bench = load_benchmark("aio3", root, layout="promptir")
    assert [t.task for t in bench.tasks] == ["denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"]
    assert bench.missing == []
    sizes = {t.task: len(t) for t in bench.tasks}
    assert sizes == {"denoise_15": 3, "denoise_25": 3, "denoise_50": 3, "derain": 2, "dehaze": 1}
    derain = bench.tasks[3]
    assert any("rain-3.png" in line and "no matching target" in line for line in derain.unmatched)
    sample = next(iter(bench.tasks[1]))
    assert sample.degraded.shape == sample.clean.shape == (32, 32, 3)  # cropped to ×16
    assert 0.05 < float(np.abs(sample.degraded - sample.clean).mean()) < 0.15  # σ=25
    again = next(iter(load_benchmark("aio3", root).tasks[1]))  # auto layout, same noise
    assert np.array_equal(sample.degraded, again.degraded)
    five = load_benchmark("aio5", root, layout="promptir")
    assert len(five.missing) == 2
    assert any(line.startswith("deblur") and "test/deblur" in line for line in five.missing)


def test_moce_layout_five_task(tmp_path):
    bench = load_benchmark("aio5", _moce(tmp_path), layout="moce")
    assert bench.missing == []
    assert [(t.task, len(t)) for t in bench.tasks] == [
        ("denoise_25", 1), ("derain", 1), ("dehaze", 1), ("deblur", 1), ("lowlight", 1)]
    for ts in bench.tasks:
        samples = list(ts)
        assert len(samples) == 1 and ts.errors == []


def test_paired_folder_reports_unmatched_and_unreadable(tmp_path):
    d = tmp_path / "mine"
    for name in ("a", "b"):
        _write(d / "input" / f"{name}.png", 1)
        _write(d / "target" / f"{name}.png", 2)
    (d / "input/c.png").write_bytes(b"not an image")
    _write(d / "target/c.png", 3)
    _write(d / "target/lonely.png", 4)
    bench = load_benchmark(f"paired:{d}", tmp_path)
    (ts,) = bench.tasks
    assert len(ts) == 3
    assert any("lonely.png" in line for line in ts.unmatched)
    samples = list(ts)
    assert [s.name for s in samples] == ["a", "b"]
    assert len(ts.errors) == 1 and "c.png" in ts.errors[0]
    assert len(ts.verify()) == 1


def test_gray_denoise_spec_keeps_noise_gray(tmp_path):
    for i in range(2):
        _write(tmp_path / "gray" / f"{i}.png", i, h=48, w=48, gray=True)
    bench = load_benchmark("denoise:gray@15,50", tmp_path)
    assert [t.task for t in bench.tasks] == ["denoise_15", "denoise_50"]
    s = next(iter(bench.tasks[1]))
    assert s.gray
    assert np.array_equal(s.degraded[..., 0], s.degraded[..., 2])
    assert 0.1 < float(np.abs(s.degraded - s.clean).mean()) < 0.2  # σ=50


def test_bytask_layout_and_bad_specs(tmp_path):
    _write(tmp_path / "denoise/CBSD68/1.png", 1)
    _write(tmp_path / "derain/Rain100L-sub2/rain/rain-1.png", 2)
    _write(tmp_path / "derain/Rain100L-sub2/norain/norain-1.png", 3)
    bench = load_benchmark("aio3", tmp_path)
    assert [t.task for t in bench.tasks] == ["denoise_15", "denoise_25", "denoise_50", "derain"]
    assert len(bench.missing) == 1 and bench.missing[0].startswith("dehaze")
    with pytest.raises(ExpertirError, match="unknown benchmark spec"):
        load_benchmark("aio7", tmp_path)
    with pytest.raises(ExpertirError, match="folder not found"):
        load_benchmark("paired:nowhere", tmp_path)
    with pytest.raises(ExpertirError, match="manifest"):
        load_benchmark("mixed", tmp_path)

"""Evaluation runner, tables (Markdown/CSV/JSON) and the ``expertir eval`` command."""

import csv
import json

import numpy as np
import pytest

from conftest import smooth_image
from expertir.cli.main import main
from expertir.data.benchmarks import load_benchmark
from expertir.evaluation import evaluate, make_classical, to_csv, to_dict, to_markdown
from expertir.imageio import save_rgb


def independent_psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR of uint8-quantised images, centre-cropped to a multiple of 16, written out."""
    h, w = target.shape[:2]
    ch, cw = h % 16, w % 16
    crop = (slice(ch // 2, h - ch + ch // 2), slice(cw // 2, w - cw + cw // 2))
    mse = np.mean((pred[crop].astype(np.float64) - target[crop].astype(np.float64)) ** 2)
    return 10 * np.log10(1.0 / mse)


def make_paired_set(folder, count=3, size=(40, 52), seed=0):
    """input/ + target/ with matching names; returns the uint8-quantised arrays written."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        clean = np.round(smooth_image(*size, seed=seed + i) * 255) / 255
        noisy = np.round(np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1) * 255) / 255
        save_rgb(folder / "input" / f"img{i}.png", noisy.astype(np.float32))
        save_rgb(folder / "target" / f"img{i}.png", clean.astype(np.float32))
        pairs.append((noisy, clean))
    return pairs


def test_identity_psnr_matches_independent_computation(tmp_path):
    pairs = make_paired_set(tmp_path / "set")
    bench = load_benchmark(f"paired:{tmp_path / 'set'}", tmp_path)
    report = evaluate([make_classical("identity")], bench, progress=False)
    (col,) = report.columns
    score = report.scores["identity"][col.key]
    assert score.count == 3
    expected = np.mean([independent_psnr(n, c) for n, c in pairs])
    assert score.psnr == pytest.approx(expected, abs=1e-6)
    assert 0 < score.ssim < 1


def test_missing_parts_are_reported_and_table_is_partial(tmp_path):
    root = tmp_path / "data"
    for i in range(2):  # only the denoising test set of the three-task benchmark exists
        save_rgb(root / "denoise" / "CBSD68" / f"{i}.png", smooth_image(32, 48, seed=i))
    bench = load_benchmark("aio3", root)
    assert {ts.task for ts in bench.tasks} == {"denoise_15", "denoise_25", "denoise_50"}
    report = evaluate([make_classical("identity"), make_classical("dcp")], bench, progress=False)
    md = to_markdown(report)
    assert "Missing (skipped):" in md and "derain" in md and "dehaze" in md
    assert md.count("| identity |") == 3  # scores, made-worse counts, seam ratios
    dcp_row = next(line for line in md.splitlines() if line.startswith("| dcp |"))
    assert dcp_row.count("–") == 4  # three denoising columns and the average
    # denoising at higher σ is worse for the identity
    p = [report.scores["identity"][c.key].psnr for c in report.columns]
    assert p[0] > p[1] > p[2]


def test_json_and_csv_agree_with_markdown(tmp_path):
    make_paired_set(tmp_path / "a", count=2, seed=1)
    bench = load_benchmark(f"paired:{tmp_path / 'a'}", tmp_path)
    report = evaluate([make_classical("identity"), make_classical("nlm", sigma=12.75)], bench,
                      progress=False)
    main_table = to_markdown(report).split("Images made worse")[0]
    md_rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
               for line in main_table.splitlines() if line.startswith("| ") and "Method" not in line}
    lines = [ln for ln in to_csv(report).splitlines() if not ln.startswith("#")]
    csv_rows = {row[0]: row[1:] for row in list(csv.reader(lines))[1:]}
    data = to_dict(report)
    key = report.columns[0].key
    for method in ("identity", "nlm"):
        cells = md_rows[method]
        psnr_md, ssim_md = cells[0].split("/")
        assert csv_rows[method][:2] == [psnr_md, ssim_md]
        entry = data["methods"][method]["sets"][key]
        assert f"{entry['psnr']:.2f}" == psnr_md and f"{entry['ssim']:.3f}" == ssim_md
        assert np.mean([i["psnr"] for i in entry["images"]]) == pytest.approx(entry["psnr"])
    assert data["protocol"] in to_markdown(report)
    # NLM at the right σ improves on the noisy input
    assert float(md_rows["nlm"][0].split("/")[0]) > float(md_rows["identity"][0].split("/")[0])


def test_classical_denoisers_beat_identity_on_gray(rng):
    from expertir.data.benchmarks import Sample

    class Task:
        task, name, sigma = "denoise_25", "tiny σ=25", 25.0

    clean = np.repeat(np.round(smooth_image(48, 48, seed=3)[..., :1] * 255) / 255, 3, axis=2)
    noisy = np.repeat(np.clip(clean[..., :1] + rng.normal(0, 25 / 255, (48, 48, 1)), 0, 1), 3, axis=2)
    sample = Sample("x", noisy.astype(np.float32), clean.astype(np.float32), gray=True)
    base = independent_psnr(noisy, clean)
    for name in ("bm3d", "nlm"):
        method = make_classical(name)
        assert method.applies_to(Task) and not method.applies_to(type("T", (), {"task": "derain", "sigma": None}))
        out = method.restore(sample, Task)
        assert out.shape == clean.shape and np.array_equal(out[..., 0], out[..., 2])
        assert independent_psnr(out, clean) > base + 3


def test_bm3d_outputs_are_cached_by_input_and_sigma(tmp_path, monkeypatch, rng):
    import bm3d

    from expertir.evaluation.classical import BM3D

    monkeypatch.setenv("EXPERTIR_CACHE_DIR", str(tmp_path))
    colour = np.clip(smooth_image(32, 32, seed=1) + rng.normal(0, 0.1, (32, 32, 3)), 0, 1).astype(np.float32)
    method = make_classical("bm3d")
    first = {(k, s): method.denoise(img, s) for k, img in (("gray", colour[..., :1]), ("colour", colour))
             for s in (25.0, 50.0)}
    assert len(list((tmp_path / "bm3d").glob("*.npy"))) == 4  # one per input and σ

    def not_again(*args, **kwargs):
        raise AssertionError("BM3D ran although its output was cached")

    monkeypatch.setattr(bm3d, "bm3d", not_again)
    monkeypatch.setattr(bm3d, "bm3d_rgb", not_again)
    for (kind, sigma), out in first.items():
        img = colour[..., :1] if kind == "gray" else colour
        assert np.array_equal(method.denoise(img, sigma), out)
    BM3D.cache_path(colour, 25.0).write_bytes(b"damaged")  # an unreadable entry is computed again
    with pytest.raises(AssertionError, match="was cached"):
        method.denoise(colour, 25.0)
    monkeypatch.undo()
    monkeypatch.setenv("EXPERTIR_CACHE_DIR", "/proc/no-such-dir")  # cannot be written: still denoises
    np.testing.assert_allclose(method.denoise(colour, 50.0), first["colour", 50.0], atol=1e-4)


def test_dark_channel_prior_removes_uniform_haze():
    from expertir.data.benchmarks import Sample

    clean = smooth_image(64, 64, seed=5) * 0.8
    clean[..., 0] *= 0.05  # a dark channel near zero, as the prior assumes ...
    clean[:12] = 0.9  # ... except in a sky region as bright as the airlight
    hazy = clean * 0.5 + 0.9 * 0.5  # I = J t + A (1 - t), t = 0.5, A = 0.9
    task = type("T", (), {"task": "dehaze", "name": "haze", "sigma": None})
    out = make_classical("dcp").restore(Sample("h", hazy.astype(np.float32), clean), task)
    assert independent_psnr(out, clean) > independent_psnr(hazy, clean) + 5


def test_eval_cli_writes_tables_and_rejects_bad_input(tmp_path, capsys):
    make_paired_set(tmp_path / "pairs", count=2)
    out = tmp_path / "out"
    assert main(["eval", "--method", "identity,bm3d", "--benchmark", f"paired:{tmp_path / 'pairs'}",
                 "--data-root", str(tmp_path), "-o", str(out),
                 "--save-images", str(tmp_path / "imgs")]) == 0
    printed = capsys.readouterr().out
    assert "| identity |" in printed and "bm3d applies to none of these sets" in printed
    assert {p.name for p in out.iterdir()} == {"results.md", "results.csv", "results.json"}
    assert json.loads((out / "results.json").read_text())["methods"]["identity"]["sets"]
    assert len(list((tmp_path / "imgs" / "identity").rglob("*.png"))) == 2
    assert main(["eval", "--method", "wiener", "--benchmark", "aio3", "--data-root", str(tmp_path)]) == 2
    assert "unknown method 'wiener'" in capsys.readouterr().err
    assert main(["eval", "--model", "no_such_model", "--benchmark", "aio3", "--data-root", str(tmp_path)]) == 2


def test_eval_cli_with_untrained_model_on_missing_benchmark(tmp_path, capsys):
    root = tmp_path / "data"
    save_rgb(root / "derain" / "Rain100L" / "rain" / "rain-1.png", smooth_image(32, 32, seed=1))
    save_rgb(root / "derain" / "Rain100L" / "norain" / "norain-1.png", smooth_image(32, 32, seed=2))
    rc = main(["eval", "--model", "restormer_tiny", "--untrained", "--benchmark", "aio5",
               "--data-root", str(root), "-o", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 0
    text = (tmp_path / "o" / "results.md").read_text()
    assert "derain: Rain100L" in text and "Missing (skipped):" in text and "deblur" in text


def test_eval_cli_puts_baselines_and_several_checkpoints_in_one_table(tmp_path, capsys):
    import torch

    from expertir.checkpoint import save_checkpoint
    from expertir.models import build_model

    make_paired_set(tmp_path / "pairs", count=2)
    files = []
    for seed in (0, 1):  # two checkpoints of the same model: rows told apart by file
        torch.manual_seed(seed)
        files.append(tmp_path / f"run{seed}" / "final.safetensors")
        save_checkpoint(files[-1], build_model("restormer_tiny"), "restormer_tiny")
    out = tmp_path / "out"
    assert main(["eval", "--method", "identity", "--weights", *map(str, files),
                 "--benchmark", f"paired:{tmp_path / 'pairs'}", "-o", str(out), "--device", "cpu"]) == 0
    methods = json.loads((out / "results.json").read_text())["methods"]
    assert list(methods) == ["identity", "restormer_tiny (run0/final)", "restormer_tiny (run1/final)"]
    assert methods["restormer_tiny (run0/final)"]["sets"] != methods["restormer_tiny (run1/final)"]["sets"]
    assert main(["eval", "--benchmark", "aio3"]) == 2
    assert "say what to evaluate" in capsys.readouterr().err


class _Darken:
    """A method that makes every image darker: it harms clean inputs and most others."""

    name, description = "darken", "multiplies by 0.8"

    def applies_to(self, task_set):
        return True

    def restore(self, sample, task_set):
        return sample.degraded * 0.8


def test_clean_fidelity_and_made_worse_counts(tmp_path):
    for i in range(3):
        save_rgb(tmp_path / "clean" / f"{i}.png", smooth_image(32, 48, seed=i))
    make_paired_set(tmp_path / "pairs", count=2)
    from expertir.data.benchmarks import load_benchmarks

    bench = load_benchmarks([f"paired:{tmp_path / 'pairs'}", f"clean:{tmp_path / 'clean'}"], tmp_path)
    assert [ts.task for ts in bench.tasks] == ["pairs", "clean"]
    report = evaluate([make_classical("identity"), _Darken()], bench, progress=False)
    pairs_key, clean_key = (c.key for c in report.columns)
    assert report.scores["identity"][clean_key].psnr == float("inf")
    assert report.scores["identity"][clean_key].made_worse == 0
    assert report.scores["identity"][pairs_key].made_worse == 0  # equal to the input: not worse
    assert report.scores["darken"][clean_key].made_worse == 3
    assert report.scores["darken"][pairs_key].made_worse == 2
    md = to_markdown(report)
    worse_table = md.split("Images made worse")[1].split("Seam ratio")[0]
    assert [ln for ln in worse_table.splitlines() if ln.startswith("| darken")] == ["| darken | 2/2 | 3/3 | 5/5 |"]
    seam_table = md.split("Seam ratio")[1]
    assert [ln for ln in seam_table.splitlines() if ln.startswith("| darken")] == ["| darken | 1.00 | 1.00 |"]
    # the clean-fidelity column stays out of the average
    avg = to_dict(report)["methods"]["darken"]["average"]["psnr"]
    assert avg == pytest.approx(report.scores["darken"][pairs_key].psnr)
    assert to_dict(report)["methods"]["darken"]["sets"][clean_key]["made_worse"] == 3

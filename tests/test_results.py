"""Result figures and the whole ``tools/results.py`` pipeline on a tiny data root."""

import csv
import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image
from expertir.checkpoint import read_metadata
from expertir.errors import ExpertirError
from expertir.evaluation.figures import crop_window, curves_figure, run_folder_of
from expertir.evaluation.publish import MARK_BEGIN, MARK_END
from expertir.imageio import save_rgb
from expertir.weights import list_shipped, shipped_weights

TOOL = Path(__file__).resolve().parents[1] / "tools" / "results.py"
TASKS = ["denoise_25", "derain", "lowlight", "clean"]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def fake_run(folder: Path, steps=(50, 100, 150, 200)) -> Path:
    """A run folder as the trainer writes it: train.csv and val.csv (with the clean task)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "train.csv", [{"step": s, "loss": 1 / s + 0.1, "l1": 0.5 / s + 0.05, "lr": 1e-3,
                                      "images_per_s": 30.0} for s in steps])
    write_csv(folder / "val.csv", [{"step": s, "task": t, "psnr": 20 + s / 100 + i,
                                    "input_psnr": 120.0 if t == "clean" else 18 + i}
                                   for s in steps[1::2] for i, t in enumerate(TASKS)])
    return folder


def test_curves_figure_of_a_run_folder(tmp_path):
    out = curves_figure(fake_run(tmp_path / "run"), tmp_path / "curves.png", title="tiny")
    with Image.open(out) as img:
        assert img.width > 2.5 * img.height  # three panels side by side: loss, gain, clean
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10  # something was drawn
    with pytest.raises(ExpertirError, match="not a training run folder"):
        curves_figure(tmp_path / "empty", tmp_path / "x.png")


def test_a_later_stage_is_shown_with_the_run_it_continues(tmp_path):
    from expertir.training.logs import plot_curves, stage_folders, stage_logs

    first = fake_run(tmp_path / "runs" / "shipped" / "m")
    (first / "config.yaml").write_text("train:\n  steps: 200\n")
    second = fake_run(tmp_path / "runs" / "shipped" / "m_stage2", steps=(10, 20))
    # train.init is relative to where the training ran (here: tmp_path)
    (second / "config.yaml").write_text("train:\n  steps: 20\n  init: runs/shipped/m/final.safetensors\n")
    assert stage_folders(second) == [first, second] and stage_folders(first) == [first]
    train, val, starts = stage_logs(second)
    assert [int(r["step"]) for r in train] == [50, 100, 150, 200, 210, 220] and starts == [200]
    assert sorted({int(r["step"]) for r in val}) == [100, 200, 220]
    (second / "config.yaml").write_text("train:\n  steps: 20\n  init: elsewhere/final.safetensors\n")
    assert stage_folders(second) == [second]  # the earlier stage is not here: the run alone
    # a stage trained with the PSNR loss logs a negative loss: no log-scale plot of it
    write_csv(second / "train.csv", [{"step": s, "loss": -20.0 - s / 10, "l1": 0.05, "psnr": -20.0 - s / 10,
                                      "lr": 1e-4, "images_per_s": 9.0} for s in (10, 20)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert curves_figure(second, tmp_path / "c.png").is_file()
        assert plot_curves(second).is_file()


def test_run_folder_is_found_by_file_identity_then_by_name(tmp_path):
    runs = tmp_path / "runs"
    own = fake_run(runs / "a" / "own")
    (own / "final.safetensors").write_bytes(b"weights A")
    copy = tmp_path / "shipped" / "m.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(b"weights A")
    meta = {"training": {"config": {"name": "named"}}}
    assert run_folder_of(own / "final.safetensors", {}, runs)[0] == own  # its own folder
    assert run_folder_of(copy, meta, runs)[0] == own  # same bytes
    copy.write_bytes(b"weights B")
    assert run_folder_of(copy, meta, runs)[0] is None
    fake_run(runs / "b" / "named")
    folder, why = run_folder_of(copy, meta, runs)
    assert folder == runs / "b" / "named" and "named" in why
    fake_run(runs / "c" / "named")
    folder, why = run_folder_of(copy, meta, runs)
    assert folder is None and "2 run folders" in why


def test_crop_window_shows_the_degraded_detail():
    clean = np.full((96, 160, 3), 0.5, np.float32)
    clean[8:40, 100:140] = smooth_image(32, 40, seed=1) > 0.5  # texture in one corner only
    degraded = clean.copy()
    degraded[0:48, 96:160] += 0.2  # degraded around it
    ys, xs = crop_window(degraded, clean, 32)
    assert 0 <= ys.start <= 16 and 96 <= xs.start <= 112 and ys.stop - ys.start == 32
    dark = np.full((96, 160, 3), 0.9, np.float32)  # low light: a bright flat wall, detail elsewhere
    dark[40:96, 0:60] = np.random.default_rng(2).uniform(0.2, 0.6, (56, 60, 3))
    ys, xs = crop_window(dark * 0.1, dark, 32)
    assert ys.start >= 40 and xs.stop <= 60
    ys, xs = crop_window(clean, clean, 200)  # clean input: the detail alone; crop fits the image
    assert ys.stop - ys.start == xs.stop - xs.start == 96 and xs.start <= 100 and xs.stop >= 140


def tiny_data_root(root: Path) -> Path:
    """Every acceptance set in the by-task layout, two tiny images each."""
    for i in range(2):
        img = smooth_image(32, 48, seed=i)
        gray = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
        save_rgb(root / "denoise" / "BSD68" / f"{i}.png", gray)
        save_rgb(root / "denoise" / "CBSD68" / f"{i}.png", img)
        save_rgb(root / "denoise" / "McMaster" / f"{i}.png", smooth_image(48, 48, seed=10 + i))
        streaks = np.zeros_like(img)
        streaks[:, 3 + 7 * i::9] = 0.4
        save_rgb(root / "derain" / "Rain100L" / "rain" / f"rain-00{i}.png", np.clip(img + streaks, 0, 1))
        save_rgb(root / "derain" / "Rain100L" / "norain" / f"norain-00{i}.png", img)
        save_rgb(root / "dehaze" / "SOTS-outdoor" / "input" / f"000{i}_0.8_0.2.png", img * 0.5 + 0.45)
        save_rgb(root / "dehaze" / "SOTS-outdoor" / "target" / f"000{i}.png", img)
        save_rgb(root / "lowlight" / "LOL-eval15" / "low" / f"{i}.png", img * 0.1)
        save_rgb(root / "lowlight" / "LOL-eval15" / "high" / f"{i}.png", img)
    return root


def load_tool():
    spec = importlib.util.spec_from_file_location("results_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_docs_with_limit_would_not_touch_the_committed_docs(capsys):
    tool = load_tool()
    with pytest.raises(SystemExit):
        tool.parse_args(["--data-root", "x", "--limit", "2", "--write-docs"])
    assert "partial sets" in capsys.readouterr().err


@pytest.mark.skipif(not list_shipped(), reason="this build ships no weights")
def test_results_pipeline_on_a_tiny_data_root(tmp_path, capsys, monkeypatch):
    data = tiny_data_root(tmp_path / "data")
    runs = tmp_path / "runs"
    shipped = list_shipped()
    run = fake_run(runs / "shipped" / shipped[0].stem)
    shutil.copyfile(shipped[0], run / "final.safetensors")  # the run the first shipped file came from
    docs = tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text(f"# Results\n\nintro\n\n{MARK_BEGIN}\nstale\n{MARK_END}\n\n## Ablations\n")
    cards = tmp_path / "cards"
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    tool = load_tool()
    rc = tool.main(["--data-root", str(data), "-o", str(out), "--runs", str(runs), "--limit", "2",
                    "--write-docs", "--docs", str(docs), "--cards", str(cards), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err

    result = json.loads((out / "results.json").read_text())
    labels = [c["label"] for c in result["columns"]]
    assert labels == ["BSD68 σ=25", "CBSD68 σ=15", "CBSD68 σ=25", "CBSD68 σ=50", "derain: Rain100L",
                      "dehaze: SOTS-outdoor", "lowlight: LOL-eval15", "deblur: McMaster-blur",
                      "clean: CBSD68", "clean: McMaster"]
    assert not result["missing"]
    rows = result["methods"]
    assert list(rows) == ["identity", "bm3d"] + [p.stem for p in shipped]
    assert set(rows["bm3d"]["sets"]) == {c["key"] for c in result["columns"][:4]}  # denoising only
    for p in shipped:
        assert all(s["count"] == 2 for s in rows[p.stem]["sets"].values())
    assert (out / "testsets" / "mcmaster_blur" / "manifest.json").is_file()

    verdict = (out / "verdict.md").read_text()
    assert "| no harm: BSD68 σ=25: above the input |" in verdict and "Rule:" in verdict
    # the loud warning appears exactly when the measured default is not the committed one
    assert ("DEFAULT_MODEL" in captured.err) != (f"Default: **{_committed_default()}**" in verdict)

    crops = out / "crops.png"
    assert crops.stat().st_size < 1_000_000
    with Image.open(crops) as img:
        assert img.width > 100 and img.height > img.width  # six rows
    assert (out / f"curves_{shipped[0].stem}.png").is_file()  # matched by file identity
    assert len(list(out.glob("curves_*.png"))) == 1  # the other shipped models have no run here

    text = docs.read_text()
    assert text.startswith("# Results\n\nintro\n\n" + MARK_BEGIN) and text.endswith(MARK_END + "\n\n## Ablations\n")
    assert "stale" not in text and "### Acceptance and default model" in text
    # the method comparison says how the baseline's training compares (a milestone: its step)
    training = read_metadata(shipped_weights("restormer_tiny"))["training"]
    budget = ("same budget" if training["steps"] >= training.get("planned_steps", training["steps"]) else
              f"the baseline stopped at step {training['steps']} of its {training['planned_steps']}")
    assert f"**sler_ir_tiny against restormer_tiny** ({budget}" in text
    assert "first 2 images of each set" in text
    assert str(tmp_path) not in text and "--data-root DATA" in text
    assert (docs.parent / "results_crops.png").is_file() and "(results_crops.png)" in text
    for p in shipped:
        card = (cards / f"{p.stem}.md").read_text()
        assert f"### Acceptance of {p.stem}" in card and "## Evaluation" in card
        assert str(tmp_path) not in card


def _committed_default() -> str:
    from expertir.weights import DEFAULT_MODEL

    return shipped_weights(DEFAULT_MODEL).stem

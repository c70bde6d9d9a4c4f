"""`expertir explain` and `expertir.explain`: estimates, maps, figures, JSON, the sphere."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import expertir
from expertir.cli.main import main
from expertir.data.benchmarks import load_benchmark
from expertir.data.tasks import TASK_IDS
from expertir.explanation import embed_benchmark, explain, probe, write_json
from expertir.explanation.figures import confusion_figure, explanation_figure, sphere_figure
from expertir.explanation.sphere import embed, load_test_sets, sphere_coordinates
from expertir.weights import load_pretrained

from conftest import smooth_image


@pytest.fixture(scope="module")
def sler():
    torch.manual_seed(0)
    return load_pretrained("sler_ir_tiny", untrained=True)


@pytest.fixture
def small_probe(monkeypatch, tmp_path):
    """CEA's probe fitted on one 32-px crop per photo (35 patches), cached in a fresh folder."""
    monkeypatch.setenv("EXPERTIR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(probe, "CROPS_PER_PHOTO", 1)
    monkeypatch.setattr(probe, "PATCH", 32)
    return tmp_path / "cache" / "probes"


def _png(path, img):
    Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
    return path


def test_top_package_exposes_explain():
    assert expertir.explain is explain
    with pytest.raises(AttributeError):
        expertir.no_such_thing  # noqa: B018


def test_sler_ir_estimate_maps_and_json(sler, tmp_path):
    img = smooth_image(24, 40)
    ex = explain(img, sler, device="cpu", name="smooth")
    assert ex.kind == "sler_ir" and ex.output.shape == img.shape and ex.change.shape == (24, 40)
    est = ex.estimate
    n = len(TASK_IDS)
    assert est.tasks == TASK_IDS and est.scores.shape == est.probabilities.shape == (n,)
    assert np.isclose(est.probabilities.sum(), 1, atol=1e-5) and np.all(np.abs(est.scores) <= 1 + 1e-5)
    assert est.top == TASK_IDS[int(np.argmax(est.scores))] and est.margin >= 0
    grid = (2, 3)  # 24×40 pixels padded to 32×48: 16-px regions
    assert [e.layer for e in ex.experts] == ["encoder1.0", "latent4.0", "decoder3.0", "refinement1.0"]
    for e in ex.experts:
        assert e.dominant.shape == grid and 0 <= e.dominant.min() and e.dominant.max() < 4
    assert len(ex.usage) == 14 and all(np.isclose(u.sum(), 1, atol=1e-5) for u in ex.usage.values())
    assert ex.nearest_prototype.shape == grid and ex.gate.shape == grid
    assert 0 <= ex.gate.min() and ex.gate.max() <= 1 and ex.aux_scale == 1.0

    write_json(ex, tmp_path / "x.json")
    d = json.loads((tmp_path / "x.json").read_text())
    assert d["estimate"]["top"] == est.top
    assert np.isclose(sum(t["probability"] for t in d["estimate"]["tasks"].values()), 1, atol=1e-3)
    assert np.array(d["dominant_expert"]["latent4.0"]).shape == grid
    assert np.isclose(sum(d["nearest_prototype"]["share"].values()), 1, atol=1e-3)
    explanation_figure(ex, tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as im:
        assert im.size[0] >= 1000 and im.size[1] >= 1000


def test_chosen_layers_and_large_images_use_a_bounded_copy(sler):
    img = smooth_image(32, 80)
    ex = explain(img, sler, device="cpu", layers=["encoder2.1"], max_aux_pixels=16 * 40)
    assert ex.output.shape == img.shape  # restored at full size
    assert ex.aux_scale == 0.5 and ex.aux_size == (16, 40)
    assert [e.layer for e in ex.experts] == ["encoder2.1"] and ex.experts[0].dominant.shape == (1, 3)
    assert ex.region == 32.0  # a 16-px region of the half-size copy covers 32 image pixels
    with pytest.raises(expertir.ExpertirError, match="unknown layer"):
        explain(img, sler, device="cpu", layers=["decoder9.9"])


def test_embedding_sphere_matches_recorded_embedding(sler):
    img = smooth_image(21, 37)
    g, local = embed(sler.model, img)
    _, aux = sler.model(torch.from_numpy(img).permute(2, 0, 1)[None], return_aux=True)
    assert torch.allclose(g, aux["embedding_global"][0], atol=1e-5)
    assert torch.allclose(local, aux["embedding_local"][0], atol=1e-5)


def test_cea_probe_estimate_affinity_maps_and_cache(small_probe, tmp_path, monkeypatch):
    cea = load_pretrained("cea_tiny", untrained=True)
    img = smooth_image(24, 32)
    ex = explain(img, cea, device="cpu")
    assert ex.kind == "cea" and ex.estimate.method == "probe"
    assert np.isclose(ex.estimate.probabilities.sum(), 1, atol=1e-5)
    assert ex.estimate.scores.shape == (len(TASK_IDS),) and "held-out accuracy" in ex.estimate.note
    assert [c.layer for c in ex.components] == ["encoder1.0"] * 4 + ["refinement1.0"] * 4
    strengths = [c.strength for c in ex.components[:4]]
    assert strengths == sorted(strengths, reverse=True)
    assert all(c.map.shape == (24, 32) for c in ex.components)  # level-1 blocks: full resolution
    cached = list(small_probe.glob("cea_tiny-*.json"))
    assert len(cached) == 1

    def no_refit(*args, **kwargs):
        raise AssertionError("the cached probe should have been used")

    monkeypatch.setattr(probe, "fit_probe", no_refit)
    assert json.loads(cached[0].read_text()) == probe.load_or_fit_probe(cea.model, cea.name).to_dict()
    cached[0].write_text("{not json")  # a damaged cache file is fitted again
    with pytest.raises(AssertionError, match="cached probe"):
        probe.load_or_fit_probe(cea.model, cea.name)
    explanation_figure(ex, tmp_path / "cea.png")
    assert (tmp_path / "cea.png").stat().st_size > 20_000
    d = ex.to_dict()
    assert len(d["components"]) == 8 and d["estimate"]["method"] == "probe"


def test_probe_fit_separates_separable_features():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(20)
    feats = torch.randn(60, 5, generator=gen) * 0.1
    feats[torch.arange(60), labels] += 2.0
    fitted = probe.DegradationProbe.fit(feats, labels, ["a", "b", "c"])
    p = fitted.probabilities(feats)
    assert p.shape == (60, 3) and torch.allclose(p.sum(1), torch.ones(60))
    assert (p.argmax(1) == labels).all()
    back = probe.DegradationProbe.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert torch.allclose(back.probabilities(feats), p, atol=1e-5)


def test_model_without_routing_says_it_has_no_estimate(tmp_path):
    net = load_pretrained("restormer_tiny", untrained=True)
    ex = explain(smooth_image(16, 16), net, device="cpu")
    assert ex.kind == "plain" and ex.estimate is None and "no degradation" in ex.no_estimate
    explanation_figure(ex, tmp_path / "plain.png")
    assert json.loads(json.dumps(ex.to_dict()))["estimate"] is None


def test_cli_explains_good_images_and_reports_a_bad_one_in_one_line(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png", smooth_image(24, 40, seed=1))
    _png(src / "b.png", smooth_image(1, 1, seed=2))  # a 1×1 image works too
    (src / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    code = main(["explain", str(src), "-o", str(out), "--model", "sler_ir_tiny", "--untrained",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 1 and "Traceback" not in text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert "explained 2 of 3" in captured.out
    for name in ("a", "b"):
        assert (out / "in" / f"{name}.png").stat().st_size > 20_000
        d = json.loads((out / "in" / f"{name}.json").read_text())
        assert d["estimate"]["method"] == "prototypes"
    assert not (out / "in" / "broken.json").exists()


def test_cli_option_mistakes_are_one_line_errors(tmp_path, capsys):
    img = _png(tmp_path / "a.png", smooth_image(16, 16))
    args = ["explain", str(img), "-o", str(tmp_path / "o"), "--model", "sler_ir_tiny", "--untrained"]
    assert main(args + ["--layers", "nope1.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown layer(s) nope1.0" in err and "encoder1.0" in err
    assert main(["explain", "-o", str(tmp_path / "o")]) == 2
    assert main(["explain", str(img), "--sphere", "-o", str(tmp_path / "o")]) == 2
    assert main(["explain", str(img), "-o", str(tmp_path), "--model", "sler_ir_tiny", "--untrained"]) == 1
    assert "would overwrite an input" in capsys.readouterr().out


@pytest.fixture
def clean_dir(tmp_path):
    d = tmp_path / "clean"
    d.mkdir()
    for i in range(3):
        _png(d / f"{i}.png", smooth_image(32, 32, seed=i))
    return d


def test_sphere_report_figures_and_cli(sler, clean_dir, tmp_path, capsys):
    bench = load_benchmark(f"denoise:{clean_dir}@15,50", tmp_path)
    report = embed_benchmark(sler.model, "sler_ir_tiny", bench, progress=False)
    assert report.tasks == ["denoise_15", "denoise_50"] and report.embeddings.shape == (6, 128)
    rows = report.rows()
    assert [r["images"] for r in rows] == [3, 3, 6]
    assert report.confusion().shape == (2, len(TASK_IDS)) and report.confusion().sum() == 6
    truth = np.array([TASK_IDS.index(t) for t in report.tasks])[report.labels]
    assert rows[-1]["accuracy"] == pytest.approx(np.mean(report.predicted == truth))
    assert 0 <= rows[-1]["alignment"] <= 4 and -4 <= report.uniformity() <= 0
    points, protos, share = sphere_coordinates(report.embeddings, report.labels, report.prototypes)
    assert points.shape == (6, 3) and protos.shape == (len(TASK_IDS), 3) and 0 < share <= 1 + 1e-9
    assert np.allclose(np.linalg.norm(points, axis=1), 1) and np.allclose(np.linalg.norm(protos, axis=1), 1)
    sphere_figure(report, tmp_path / "s.png")
    confusion_figure(report, tmp_path / "c.png")
    assert (tmp_path / "s.png").stat().st_size > 20_000 and (tmp_path / "c.png").stat().st_size > 10_000

    out = tmp_path / "sphere"
    code = main(["explain", "--sphere", "--benchmark", f"denoise:{clean_dir}@25", f"denoise:{clean_dir}@25",
                 "--data-root", str(tmp_path), "-o", str(out), "--model", "sler_ir_tiny", "--untrained",
                 "--device", "cpu"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"sphere.png", "confusion.png", "sphere.md", "sphere.json"}
    d = json.loads((out / "sphere.json").read_text())
    assert d["tasks"] == ["denoise_25"] and len(d["images"]) == 3  # the repeated spec counts once
    assert "| **all** |" in (out / "sphere.md").read_text() and "| **all** |" in capsys.readouterr().out


def test_sphere_needs_prototypes(clean_dir, tmp_path, capsys):
    code = main(["explain", "--sphere", "--benchmark", f"denoise:{clean_dir}@25", "--data-root",
                 str(tmp_path), "-o", str(tmp_path / "s"), "--model", "cea_tiny", "--untrained"])
    assert code == 2 and "needs SLER-IR" in capsys.readouterr().err
    with pytest.raises(expertir.ExpertirError, match="aio5"):
        load_test_sets([" "], tmp_path)

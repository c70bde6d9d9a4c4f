"""``expertir data check / make-mixed / make-synthetic / contact-sheet``."""

import json

import numpy as np

from expertir.cli.main import main
from expertir.data import load_benchmark
from expertir.imageio import load_rgb, save_rgb


def _clean_dir(path, n=2, size=40):
    rng = np.random.default_rng(0)
    for i in range(n):
        save_rgb(path / f"img{i}.png", rng.uniform(0.1, 0.9, (size, size, 3)))
    return path


def test_check_reports_counts_missing_and_unreadable(tmp_path, capsys):
    _clean_dir(tmp_path / "denoise/CBSD68", 3)
    _clean_dir(tmp_path / "denoise/BSD400", 2)
    save_rgb(tmp_path / "derain/Rain100L-x/rain/rain-1.png", np.zeros((8, 8, 3)))
    save_rgb(tmp_path / "derain/Rain100L-x/norain/norain-1.png", np.zeros((8, 8, 3)))
    save_rgb(tmp_path / "derain/Rain100L-x/rain/rain-2.png", np.zeros((8, 8, 3)))
    assert main(["data", "check", str(tmp_path)]) == 1  # one unmatched file
    out = capsys.readouterr().out
    assert "CBSD68" in out and "3 clean images" in out and "1 pairs" in out
    assert "rain-2.png: no matching target" in out
    assert "dehaze    MISSING" in out and "dehazing/SOTS/outdoor/{input,target} [moce]" in out
    assert "Benchmark aio3: incomplete (4/5 tasks; missing dehaze)" in out
    (tmp_path / "derain/Rain100L-x/rain/rain-2.png").unlink()
    (tmp_path / "denoise/CBSD68/broken.png").write_bytes(b"\x89PNG broken")
    assert main(["data", "check", str(tmp_path), "--layout", "paired"]) == 1
    out = capsys.readouterr().out
    assert "Unreadable files: 1" in out and "broken.png" in out


def test_make_mixed_writes_a_readable_deterministic_set(tmp_path, capsys):
    clean = _clean_dir(tmp_path / "clean")
    assert main(["data", "make-mixed", str(clean), "-o", str(tmp_path / "mixed"), "--seed", "3"]) == 0
    manifest = json.loads((tmp_path / "mixed/manifest.json").read_text())
    kinds = {s["kind"] for s in manifest["subsets"]}
    assert kinds == {"compose", "spatial"}
    bench = load_benchmark("mixed", tmp_path / "mixed")
    assert len(bench.tasks) == len(manifest["subsets"]) and bench.missing == []
    for ts in bench.tasks:
        samples = list(ts)
        assert len(samples) == 2 and ts.errors == [] and ts.unmatched == []
        assert all(np.abs(s.degraded - s.clean).mean() > 0.005 for s in samples)
    main(["data", "make-mixed", str(clean), "-o", str(tmp_path / "again"), "--seed", "3"])
    a = load_rgb(tmp_path / "mixed/sv-rain-haze/input/img1.png")
    b = load_rgb(tmp_path / "again/sv-rain-haze/input/img1.png")
    assert np.array_equal(a, b)


def test_make_synthetic_and_contact_sheet(tmp_path, capsys):
    clean = _clean_dir(tmp_path / "clean", 1)
    assert main(["data", "make-synthetic", str(clean), "-o", str(tmp_path / "syn"),
                 "--tasks", "derain", "lowlight"]) == 0
    bench = load_benchmark(f"synthetic:{tmp_path / 'syn'}", tmp_path)
    assert [t.task for t in bench.tasks] == ["derain", "lowlight"]
    assert main(["data", "make-synthetic", str(clean), "-o", str(tmp_path / "x"),
                 "--tasks", "snow"]) == 2  # user mistake: one line, exit 2
    assert "unknown task" in capsys.readouterr().err
    sheet = tmp_path / "sheet.png"
    assert main(["data", "contact-sheet", "--image", str(clean / "img0.png"), "-o", str(sheet),
                 "--tile", "48"]) == 0
    assert load_rgb(sheet).shape[0] > 48 * 4

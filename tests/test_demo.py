import json

from expertir.cli.main import main
from expertir.weights import list_shipped


def test_demo_writes_figure_table_and_restorations(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "demo.json").read_text())
    assert len(report["samples"]) == 6
    tasks = {s["task"] for s in report["samples"]}
    assert {"denoise_25", "derain", "dehaze", "deblur", "lowlight", "mixed"} == tasks
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert "Protocol:" in (tmp_path / "demo.md").read_text()
    if not list_shipped():  # no trained weights: the demo must say so, not pretend
        assert "UNTRAINED" in out and all("untrained" in m for m in report["models"])
    restored = list(tmp_path.glob("*/*.png"))
    assert len(restored) == 6 * len(report["models"])

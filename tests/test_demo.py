import json

from expertir.cli.main import main
from expertir.weights import list_shipped


def test_demo_writes_figure_table_and_restorations(tmp_path):
    assert main(["demo", "-o", str(tmp_path), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "demo.json").read_text())
    assert len(report["samples"]) == 7
    tasks = {s["task"] for s in report["samples"]}
    assert {"denoise_25", "derain", "dehaze", "deblur", "lowlight", "mixed", "clean"} == tasks
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert "Protocol:" in (tmp_path / "demo.md").read_text()
    assert len(report["models"]) == len(list_shipped()) > 0
    restored = list(tmp_path.glob("*/*.png"))
    assert len(restored) == 7 * len(report["models"])

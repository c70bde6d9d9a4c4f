"""Efficiency report: parameter and FLOP counts, latency, the table and the bench command."""

import torch
import torch.nn as nn

from expertir.cli.main import main
from expertir.evaluation.efficiency import (
    count_flops, count_params, efficiency_markdown, measure, median_latency_ms, preset_names,
)


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(x)


def test_flops_are_twice_the_macs_of_a_convolution():
    size = 16
    macs = 3 * 8 * 3 * 3 * size * size
    assert count_flops(OneConv(), size) == 2 * macs
    assert count_params(OneConv()) == 8 * 3 * 3 * 3


def test_latency_is_positive_median():
    assert median_latency_ms(OneConv(), 16, runs=3, warmup=1) > 0


def test_preset_names_cover_registered_presets():
    names = preset_names()
    for family in ("restormer", "promptir"):
        assert [n for n in names if n.startswith(family + "_")] == [
            f"{family}_tiny", f"{family}_small", f"{family}_base"]
    assert "restormer" not in names  # the family default duplicates a preset


def test_measure_and_table_without_cuda():
    row = measure("promptir_tiny", size=16, runs=1, warmup=0, gpu=False)
    assert row.params == count_params(__import__("expertir.models", fromlist=["x"]).build_model("promptir_tiny"))
    assert row.flops > 0 and row.cpu_ms > 0 and row.gpu_ms is None
    table = efficiency_markdown([row], 16, "test setting")
    assert "| promptir_tiny |" in table and "test setting" in table
    if not torch.cuda.is_available():
        assert "GPU latency" not in table.splitlines()[0]


def test_bench_efficiency_command(tmp_path, capsys):
    rc = main(["bench", "efficiency", "--models", "restormer_tiny", "--size", "16",
               "--runs", "1", "-o", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| restormer_tiny |" in out and "FLOPs = 2 × multiply-accumulates" in out
    assert (tmp_path / "efficiency.md").is_file() and (tmp_path / "efficiency.json").is_file()
    assert main(["bench", "efficiency", "--models", "nope"]) == 2


def test_interleaved_latencies_give_one_median_per_model():
    from expertir.evaluation.efficiency import interleaved_latencies_ms

    times = interleaved_latencies_ms([OneConv(), nn.Sequential(OneConv(), nn.ReLU())], 16, runs=3, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)
